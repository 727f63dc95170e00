"""The Content Index (cold-start candidates): OpenSearch in AWS, an in-process index locally.

Both are versioned behind an alias, like the other published artefacts: the retrain workflow
writes a complete new version and then switches the alias, so readers never see half an index.

* OpenSearchContentIndex / OpenSearchContentIndexWriter: index `<alias>-<version>`, bulk load,
  refresh, then one atomic `_aliases` call moves the alias. Search is a function_score query:
  categories as a filter, multi_match on title/text, a log1p popularity boost.
* InProcessContentIndex / InProcessContentIndexWriter: a directory `<root>/<version>/docs.jsonl`
  plus a `<root>/CURRENT` pointer file replaced atomically, so the retrain process publishes and
  the serving process picks the new version up on its next pointer check.

Serving searches the version its request is served with (recpipe.ports.SERVED_VERSION, the
bundle version), not whatever the alias or pointer names at that moment: a rollback or promote
switches the content index a moment before the model pointer, and a request must not pair the
old model with the new index. The alias/pointer is followed only when there is no model, or
the version has no index of its own (a bundle published without one).

Search semantics are the same in both: when categories are given only items having one of them
match (a filter); text matches and the number of matching categories add to the score (text
never removes results); log1p(popularity) is added to every score.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.ports import SERVED_VERSION, ContentDoc, DependencyError, RetryableError

POINTER = "CURRENT"
DOCS = "docs.jsonl"
TITLE_WEIGHT = 2.0
CATEGORY_WEIGHT = 1.0
VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOKEN = re.compile(r"[a-z0-9]+")
#: Versions the in-process index holds besides the pointer's: the one a rollback or promote
#: moves away from, still named by requests served with its bundle until the model switches.
MAX_OTHER_VERSIONS = 1

INDEX_MAPPINGS: dict[str, Any] = {
    "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 1}},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "item_id": {"type": "keyword"},
            "title": {"type": "text"},
            "text": {"type": "text"},
            "categories": {"type": "keyword"},
            "popularity": {"type": "float"},
        },
    },
}


def _check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise ValueError(f"invalid content index version {version!r} (expected {VERSION_RE.pattern})")
    return version


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


# ---- in-process ---------------------------------------------------------------------------------
class _Postings:
    """An immutable in-memory index of one version."""

    def __init__(self, version: str, docs: Sequence[ContentDoc]) -> None:
        self.version = version
        self.ids = [d.item_id for d in docs]
        self.popularity = np.asarray([math.log1p(max(d.popularity, 0.0)) for d in docs], np.float32)
        text_lists: dict[str, list[int]] = {}
        title_lists: dict[str, list[int]] = {}
        cat_lists: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            for t in set(tokens(d.title)):
                title_lists.setdefault(t, []).append(i)
            for t in set(tokens(d.text)):
                text_lists.setdefault(t, []).append(i)
            for c in d.categories:
                cat_lists.setdefault(c, []).append(i)
        n = max(len(docs), 1)
        self.title = {t: np.asarray(v, np.int32) for t, v in title_lists.items()}
        self.text = {t: np.asarray(v, np.int32) for t, v in text_lists.items()}
        self.categories = {c: np.asarray(v, np.int32) for c, v in cat_lists.items()}
        df: dict[str, int] = {}
        for lists in (title_lists, text_lists):
            for t, v in lists.items():
                df[t] = max(df.get(t, 0), len(v))
        self.idf = {t: math.log(1.0 + n / f) for t, f in df.items()}
        self.position = {item: i for i, item in enumerate(self.ids)}

    def search(
        self, text: str | None, categories: Sequence[str], k: int, exclude: Sequence[str]
    ) -> list[tuple[str, float]]:
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        score = self.popularity.astype(np.float32, copy=True)
        allowed: npt.NDArray[np.bool_] | None = None
        if categories:
            allowed = np.zeros(n, np.bool_)
            for c in set(categories):
                docs = self.categories.get(c)
                if docs is not None:
                    allowed[docs] = True
                    score[docs] += CATEGORY_WEIGHT
        if text:
            for t in set(tokens(text)):
                idf = self.idf.get(t, 0.0)
                for postings, weight in ((self.title.get(t), TITLE_WEIGHT), (self.text.get(t), 1.0)):
                    if postings is not None:
                        score[postings] += weight * idf
        if allowed is not None:
            score[~allowed] = -np.inf
        for item in exclude:
            p = self.position.get(item)
            if p is not None:
                score[p] = -np.inf
        k = min(k, n)
        top = np.argpartition(-score, k - 1)[:k]
        top = top[np.argsort(-score[top], kind="stable")]
        return [(self.ids[i], float(score[i])) for i in top.tolist() if np.isfinite(score[i])]


class InProcessContentIndex:
    """ContentIndex over a published directory (or a fixed list of docs in tests).

    The index is built in the constructor (the container's init), never inside a request. The
    pointer file is re-read at most every `refresh_s`; a new version is loaded before it
    replaces the current one, so a broken publish leaves the previous version serving. With
    `background=True` (serving) that load runs on its own thread while searches keep answering
    from the current version: building 100k documents takes a second, far past any deadline.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        docs: Sequence[ContentDoc] | None = None,
        refresh_s: float = 30.0,
        background: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.refresh_s = refresh_s
        self.background = background
        self.clock = clock
        self._index: _Postings | None = _Postings("inline", docs) if docs is not None else None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        #: Versions other than the pointer's, loaded for requests served with their bundle.
        self._others: dict[str, _Postings] = {}
        #: Versions whose documents could not be read (not retried on every request).
        self._unreadable: set[str] = set()
        self._refresh(wait=True)  # build the index at init (cold start), not inside a request

    @property
    def version(self) -> str | None:
        return self._index.version if self._index else None

    def _refresh(self, *, wait: bool = False) -> None:
        root = self.root
        if root is None or self.clock() < self._next_check:
            return
        with self._lock:  # one caller re-reads the pointer; the others keep the current version
            if self.clock() < self._next_check or (self._loader is not None and self._loader.is_alive()):
                return
            self._next_check = self.clock() + self.refresh_s
            if self.background and not wait:
                self._loader = threading.Thread(
                    target=self._load_current, args=(root,), name="recpipe-content-index", daemon=True
                )
                self._loader.start()
                return
        self._load_current(root)

    def _load_current(self, root: Path) -> None:
        try:
            version = (root / POINTER).read_text().strip()
        except OSError:
            return
        if not version or (self._index is not None and self._index.version == version):
            return
        postings = self._others.get(version)
        if postings is None:
            try:
                postings = _Postings(version, read_docs(root / version / DOCS))
            except (OSError, ValueError, KeyError, TypeError):
                return  # keep the version we have; the writer validated what it published
        previous = self._index
        self._others.pop(version, None)
        self._index = postings
        if previous is not None and previous.version != "inline":
            self._keep(previous)  # requests still served by the previous bundle name it

    def _keep(self, postings: _Postings) -> None:
        others = dict(self._others)  # replaced whole: searches read it without the lock
        others.pop(postings.version, None)
        others[postings.version] = postings
        while len(others) > MAX_OTHER_VERSIONS:
            others.pop(next(iter(others)))
        self._others = others

    def _load_version(self, root: Path, version: str) -> None:
        try:
            self._keep(_Postings(version, read_docs(root / version / DOCS)))
        except (OSError, ValueError, KeyError, TypeError):
            self._unreadable.add(version)

    def _index_for(self, version: str | None) -> _Postings | None:
        """The index of `version` (the request's), loading it off the request path if needed."""
        current, root = self._index, self.root
        if version is None or root is None or (current is not None and current.version == version):
            return current
        other = self._others.get(version)
        if other is not None:
            return other
        if (
            version in self._unreadable
            or not VERSION_RE.match(version)
            or not (root / version / DOCS).is_file()
        ):
            return current  # no index of its own (a bundle published without one): the pointer's
        with self._lock:
            if self._loader is None or not self._loader.is_alive():
                if not self.background:
                    self._load_version(root, version)
                    return self._others.get(version, current)
                self._loader = threading.Thread(
                    target=self._load_version, args=(root, version), name="recpipe-content-index", daemon=True
                )
                self._loader.start()
        # Building takes about a second per 100k documents: the read degrades meanwhile rather
        # than answer from another version's index.
        raise RetryableError(f"content index: version {version} is being loaded")

    def wait_for_refresh(self, timeout_s: float | None = None) -> None:
        """Block until a background load (if any) has finished (tests, shutdown)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout_s)

    def search(
        self, *, text: str | None, categories: Sequence[str], k: int, exclude: Sequence[str] = ()
    ) -> list[tuple[str, float]]:
        self._refresh()
        index = self._index_for(SERVED_VERSION.get())
        if index is None:
            raise DependencyError("content index: no version has been published")
        return index.search(text, categories, k, exclude)


def read_docs(path: Path) -> list[ContentDoc]:
    docs = []
    with path.open() as f:
        for line in f:
            if line.strip():
                raw = json.loads(line)
                docs.append(
                    ContentDoc(
                        item_id=str(raw["item_id"]),
                        title=str(raw["title"]),
                        categories=tuple(str(c) for c in raw.get("categories", ())),
                        text=str(raw.get("text", "")),
                        popularity=float(raw.get("popularity", 0.0)),
                    )
                )
    return docs


class InProcessContentIndexWriter:
    """ContentIndexWriter for the local stack: write the version directory, then the pointer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, version: str, docs: Iterable[ContentDoc]) -> int:
        _check_version(version)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        n = 0
        with (staging / DOCS).open("w") as f:
            for doc in docs:
                body = asdict(doc)
                body["categories"] = list(doc.categories)
                f.write(json.dumps(body, separators=(",", ":")) + "\n")
                n += 1
        final = self.root / version
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        self.switch(version)
        return n

    def versions(self) -> list[str]:
        """Published versions still on disk (restorable)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / DOCS).is_file())

    def current_version(self) -> str | None:
        try:
            return (self.root / POINTER).read_text().strip() or None
        except OSError:
            return None

    def switch(self, version: str) -> None:
        """Point readers at an already published version (publish, rollback)."""
        _check_version(version)
        if not (self.root / version / DOCS).is_file():
            raise DependencyError(f"content index version {version} is not in {self.root}")
        pointer_tmp = self.root / f".{POINTER}.{os.getpid()}.tmp"
        pointer_tmp.write_text(version + "\n")
        os.replace(pointer_tmp, self.root / POINTER)  # atomic: readers see old or new, never half


# ---- OpenSearch -----------------------------------------------------------------------------------
def _opensearch_error(exc: Exception, what: str) -> DependencyError:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import ConnectionTimeout, TransportError

    if isinstance(exc, ConnectionTimeout | OSConnectionError):
        return RetryableError(f"opensearch {what}: {exc}")
    if isinstance(exc, TransportError) and exc.status_code in (429, 502, 503, 504):
        return RetryableError(f"opensearch {what}: HTTP {exc.status_code}")
    return DependencyError(f"opensearch {what}: {exc}")


def search_body(
    text: str | None, categories: Sequence[str], k: int, exclude: Sequence[str]
) -> dict[str, Any]:
    """The query both the adapter sends and the recorded-pair tests check."""
    # match_all in `must` keeps every `should` optional: text and categories only score.
    boolean: dict[str, Any] = {"must": [{"match_all": {}}]}
    should: list[dict[str, Any]] = []
    if text:
        should.append({"multi_match": {"query": text, "fields": [f"title^{TITLE_WEIGHT:g}", "text"]}})
    if categories:
        cats = list(dict.fromkeys(categories))
        boolean["filter"] = [{"terms": {"categories": cats}}]
        # Each matching category adds to the score, like the in-process index.
        should.extend(
            {"constant_score": {"filter": {"term": {"categories": c}}, "boost": CATEGORY_WEIGHT}}
            for c in cats
        )
    if should:
        boolean["should"] = should
    if exclude:
        boolean["must_not"] = [{"ids": {"values": list(exclude)}}]
    return {
        "size": k,
        "_source": False,
        "query": {
            "function_score": {
                "query": {"bool": boolean},
                "field_value_factor": {"field": "popularity", "modifier": "log1p", "missing": 0},
                "boost_mode": "sum",
            }
        },
    }


class OpenSearchContentIndex:
    def __init__(self, client: Any, alias: str, *, timeout_s: float = 0.05) -> None:
        self.client = client
        self.alias = alias
        self.timeout_s = timeout_s
        #: Versions without an index of their own (searched through the alias instead).
        self._missing: set[str] = set()

    def index_for(self, version: str | None) -> str:
        """The request's version's index (`<alias>-<version>`), or the alias without one."""
        if version is None or not VERSION_RE.match(version) or version.lower() in self._missing:
            return self.alias
        return f"{self.alias}-{version.lower()}"

    def search(
        self, *, text: str | None, categories: Sequence[str], k: int, exclude: Sequence[str] = ()
    ) -> list[tuple[str, float]]:
        from opensearchpy.exceptions import NotFoundError

        body = search_body(text, categories, k, exclude)
        version = SERVED_VERSION.get()
        index = self.index_for(version)
        try:
            try:
                resp = self.client.search(index=index, body=body, request_timeout=self.timeout_s)
            except NotFoundError:
                if index == self.alias or version is None:
                    raise
                # A bundle published without its own index: remembered, the alias from now on.
                if len(self._missing) > 64:
                    self._missing.clear()
                self._missing.add(version.lower())
                resp = self.client.search(index=self.alias, body=body, request_timeout=self.timeout_s)
        except Exception as exc:
            raise _opensearch_error(exc, "search") from exc
        try:
            return [(str(h["_id"]), float(h["_score"])) for h in resp["hits"]["hits"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DependencyError(f"opensearch search: unexpected response ({exc})") from exc


class OpenSearchContentIndexWriter:
    """Versioned index + atomic alias switch (old version indices are left for rollback)."""

    def __init__(self, client: Any, alias: str, *, chunk_size: int = 1000) -> None:
        self.client = client
        self.alias = alias
        self.chunk_size = chunk_size

    def index_name(self, version: str) -> str:
        return f"{self.alias}-{_check_version(version).lower()}"

    def publish(self, version: str, docs: Iterable[ContentDoc]) -> int:
        from opensearchpy import helpers

        index = self.index_name(version)
        try:
            if not self.client.indices.exists(index=index):
                self.client.indices.create(index=index, body=INDEX_MAPPINGS)
            actions = (
                {
                    "_op_type": "index",
                    "_index": index,
                    "_id": d.item_id,
                    "_source": {
                        "item_id": d.item_id,
                        "title": d.title,
                        "text": d.text,
                        "categories": list(d.categories),
                        "popularity": float(d.popularity),
                    },
                }
                for d in docs
            )
            n, errors = helpers.bulk(self.client, actions, chunk_size=self.chunk_size, raise_on_error=False)
            if errors:
                raise DependencyError(
                    f"opensearch bulk: {len(errors) if isinstance(errors, list) else errors} documents failed"
                )
            self.client.indices.refresh(index=index)
            self._switch_alias(index)
        except DependencyError:
            raise
        except Exception as exc:
            raise _opensearch_error(exc, "publish") from exc
        return int(n)

    def versions(self) -> list[str]:
        """Versions whose index still exists (lower-cased, as index names are)."""
        try:
            names = self.client.indices.get(index=f"{self.alias}-*")
        except Exception as exc:
            raise _opensearch_error(exc, "list indices") from exc
        return sorted(n[len(self.alias) + 1 :] for n in names)

    def current_version(self) -> str | None:
        try:
            if not self.client.indices.exists_alias(name=self.alias):
                return None
            (index,) = sorted(self.client.indices.get_alias(name=self.alias))
        except ValueError:
            return None
        except Exception as exc:
            raise _opensearch_error(exc, "read alias") from exc
        return str(index)[len(self.alias) + 1 :]

    def switch(self, version: str) -> None:
        """Move the alias to an existing version's index (rollback)."""
        index = self.index_name(version)
        try:
            if not self.client.indices.exists(index=index):
                raise DependencyError(f"content index {index} does not exist")
            self._switch_alias(index)
        except DependencyError:
            raise
        except Exception as exc:
            raise _opensearch_error(exc, "switch alias") from exc

    def _switch_alias(self, index: str) -> None:
        current: list[str] = []
        if self.client.indices.exists_alias(name=self.alias):
            current = sorted(self.client.indices.get_alias(name=self.alias))
        actions: list[dict[str, Any]] = [
            {"remove": {"index": i, "alias": self.alias}} for i in current if i != index
        ]
        actions.append({"add": {"index": index, "alias": self.alias}})
        self.client.indices.update_aliases(body={"actions": actions})
