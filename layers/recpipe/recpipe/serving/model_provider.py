"""Which model the container serves: loaded once, verified, hot-swapped, last good kept.

The pointer (SSM parameter via ModelStore, or a local directory) is re-read at most every
`refresh_s`. A new version is fetched, checked (checksums and feature spec by load_bundle, then
a smoke inference) and only then swapped in; a version that fails is remembered and never
retried, and the previous model keeps serving.

The experiment definition stored beside the pointer (recpipe.domain.experiments) is re-read at
the same time, off the request path: every variant's bundle is loaded before the split goes
live (a split whose bundles do not all load is not applied; everyone gets the pointer's model),
and `select(user_id)` then costs a hash, no read.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from recpipe.bundle import MANIFEST, Bundle, BundleError, load_bundle
from recpipe.domain.experiments import Assigner, Experiment, ExperimentError, VariantRules, parse_experiment
from recpipe.domain.features import FeatureAssembler
from recpipe.domain.items import N_DAYPARTS, ItemTable
from recpipe.ports import SERVED_VERSION, ModelStore
from recpipe.serving.ranker import Ranker, RankerError

#: File naming the current version in a local directory of versions (the local stack's pointer).
LOCAL_POINTER = "CURRENT"
#: File beside CURRENT holding the experiment definition (as recpipe.adapters.s3_models).
LOCAL_EXPERIMENT = "EXPERIMENT"
#: Pointer values meaning "no model yet" (as recpipe.adapters.s3_models.NO_VERSION).
NO_VERSION = ("", "none", "-")
#: How many of the most popular items per daypart are kept sorted for cold start and top-up.
POPULAR_DEPTH = 5000

ModelEventSink = Callable[[str, dict[str, Any]], None]


class BundleSource(Protocol):
    def current_version(self) -> str | None: ...

    def fetch(self, version: str) -> Path:
        """A local directory holding bundle `version`."""
        ...


class StoreBundleSource:
    """Bundles in S3 behind the SSM pointer, downloaded once per version into `cache_dir`."""

    def __init__(self, store: ModelStore, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = cache_dir

    def current_version(self) -> str | None:
        return self.store.current_version()

    def current_experiment(self) -> Experiment | None:
        read = getattr(self.store, "current_experiment", None)
        return read() if read is not None else None

    def fetch(self, version: str) -> Path:
        dest = self.cache_dir / version
        if (dest / MANIFEST).is_file():
            return dest
        return self.store.fetch(version, dest)


class LocalBundleSource:
    """A bundle directory, or a directory of versions with a CURRENT file naming one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def current_version(self) -> str | None:
        manifest = self.root / MANIFEST
        if manifest.is_file():
            try:
                return str(json.loads(manifest.read_text())["version"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BundleError(f"{manifest}: unreadable ({exc})") from None
        pointer = self.root / LOCAL_POINTER
        if pointer.is_file():
            value = pointer.read_text().strip()
            return None if value.lower() in NO_VERSION else value
        return None

    def current_experiment(self) -> Experiment | None:
        path = self.root / LOCAL_EXPERIMENT
        if not path.is_file():
            return None
        value = path.read_text().strip()
        return None if value.lower() in NO_VERSION else parse_experiment(value)

    def fetch(self, version: str) -> Path:
        if (self.root / MANIFEST).is_file():
            return self.root
        return self.root / version


@dataclass(slots=True)
class LoadedModel:
    bundle: Bundle
    ranker: Ranker
    assembler: FeatureAssembler
    #: Per daypart, the most popular item indices, best first.
    popular: list[npt.NDArray[np.int32]] = field(default_factory=list)
    load_ms: float = 0.0

    @property
    def version(self) -> str:
        return self.bundle.version


def popular_by_daypart(items: ItemTable, depth: int = POPULAR_DEPTH) -> list[npt.NDArray[np.int32]]:
    """Per daypart, the `depth` most popular item indices, best first (the pool's top-up)."""
    depth = min(depth, len(items))
    popular = []
    for d in range(N_DAYPARTS):
        col = items.daypart_popularity[:, d]
        top = np.argpartition(-col, depth - 1)[:depth] if depth < len(items) else np.arange(len(items))
        popular.append(top[np.argsort(-col[top], kind="stable")].astype(np.int32))
    return popular


def prepare_model(bundle_dir: Path, *, warm_sizes: tuple[int, ...] = ()) -> LoadedModel:
    """Load, verify and smoke-test a bundle. Raises BundleError or RankerError."""
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    ranker = Ranker.from_file(bundle.ranker_path, version=bundle.version)
    assembler = FeatureAssembler(bundle.items)
    # Smoke inference on real rows of this bundle (popular items, empty user), not just zeros.
    from recpipe.domain.features import CandidateSet, RequestContext, UserView

    items = bundle.items
    popular = popular_by_daypart(items)
    smoke_items = popular[0][:8]
    n = len(smoke_items)
    cands = CandidateSet(
        items=smoke_items,
        sources=np.full(n, 16, np.uint8),
        cf_score=np.zeros(n, np.float32),
        cf_rank=np.full(n, -1.0, np.float32),
        trending=np.zeros(n, np.float32),
        anchor=np.full(n, -1, np.int32),
        neighbour_score=np.zeros(n, np.float32),
        anchor_rank=np.full(n, -1.0, np.float32),
    )
    x = assembler.assemble(cands, UserView(), RequestContext(now=time.time()))
    ranker.smoke_test(x if n else None)
    ranker.warm(warm_sizes)
    return LoadedModel(
        bundle=bundle,
        ranker=ranker,
        assembler=assembler,
        popular=popular,
        load_ms=(time.perf_counter() - t0) * 1000.0,
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """What one request is served with: the model, and the experiment variant if any."""

    model: LoadedModel | None
    variant: str | None = None
    experiment: str | None = None
    rules: VariantRules | None = None
    #: Candidate-list version to read (None: the cache's own pointer).
    candidate_version: str | None = None


@dataclass(frozen=True, slots=True)
class _LiveSplit:
    assigner: Assigner
    models: dict[str, LoadedModel]


class ModelProvider:
    def __init__(
        self,
        source: BundleSource,
        *,
        refresh_s: float = 60.0,
        warm_sizes: tuple[int, ...] = (),
        background: bool = True,
        on_event: ModelEventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.warm_sizes = warm_sizes
        self.background = background
        self.on_event = on_event or (lambda name, detail: None)
        self.clock = clock
        self._model: LoadedModel | None = None
        self._split: _LiveSplit | None = None
        self._experiment_seen: Experiment | None = None
        self._failed: dict[str, str] = {}
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._refreshing = False
        self.last_error: str | None = None

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def failed_versions(self) -> dict[str, str]:
        return dict(self._failed)

    @property
    def experiment(self) -> Experiment | None:
        """The split being served now (None: everyone gets the pointer's model)."""
        split = self._split
        return split.assigner.experiment if split is not None else None

    def loaded_versions(self) -> list[str]:
        """Every bundle version held in memory (the pointer's and each live variant's)."""
        split = self._split
        versions = {m.version for m in split.models.values()} if split is not None else set()
        if self._model is not None:
            versions.add(self._model.version)
        return sorted(versions)

    def select(self, user_id: str) -> Selection:
        """The model (and variant) for this user; the same pointer check as `current`.

        Also sets `recpipe.ports.SERVED_VERSION` to the selected bundle's version, for the
        reads of this request that follow it (the content index)."""
        model = self.current()
        split = self._split
        if split is None:
            selection = Selection(model, candidate_version=model.version if model is not None else None)
        else:
            variant = split.assigner.assign(user_id)
            selection = Selection(
                split.models[variant.bundle],
                variant=variant.name,
                experiment=split.assigner.experiment.name,
                rules=variant.rules,
                candidate_version=variant.candidate_version,
            )
        SERVED_VERSION.set(selection.model.version if selection.model is not None else None)
        return selection

    def current(self) -> LoadedModel | None:
        """The model to serve now; triggers a pointer re-check when one is due."""
        if self.clock() >= self._next_check:
            if self._model is None or not self.background:
                self.refresh()
            else:
                self._refresh_in_background()
        return self._model

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
            # Claim the slot now so concurrent requests do not start a second check.
            self._next_check = self.clock() + self.refresh_s

        def run() -> None:
            try:
                self.refresh()
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=run, name="model-refresh", daemon=True).start()

    def refresh(self) -> bool:
        """Re-read the pointer and the experiment; swap in what loads. True when the pointer's
        model was swapped."""
        self._next_check = self.clock() + self.refresh_s
        swapped = self._refresh_pointer()
        self._refresh_experiment()
        return swapped

    def _refresh_pointer(self) -> bool:
        try:
            version = self.source.current_version()
        except Exception as exc:  # SSM/S3/file errors: keep serving what we have
            self.last_error = f"model pointer unreadable: {type(exc).__name__}: {exc}"
            self.on_event("model_pointer_failed", {"reason": self.last_error})
            return False
        if version is None:
            self.last_error = "no model version published"
            if self._model is None:
                self.on_event("model_missing", {"reason": self.last_error})
            return False
        if (self._model is not None and self._model.version == version) or version in self._failed:
            return False
        model = self._load(version)
        if model is None:
            return False
        previous = self._model.version if self._model else None
        self._model = model
        gc.freeze()  # the new bundle's objects live until the next swap: keep them out of GC passes
        self.last_error = None
        self.on_event("model_loaded", {"version": version, "previous": previous, "load_ms": model.load_ms})
        return True

    def _loaded(self, version: str) -> LoadedModel | None:
        if self._model is not None and self._model.version == version:
            return self._model
        split = self._split
        return split.models.get(version) if split is not None else None

    def _load(self, version: str) -> LoadedModel | None:
        """A verified model of `version` (reused when already in memory), or None."""
        held = self._loaded(version)
        if held is not None:
            return held
        if version in self._failed:
            return None
        try:
            path = self.source.fetch(version)
            model = prepare_model(path, warm_sizes=self.warm_sizes)
            if model.version != version:
                raise BundleError(f"pointer names {version!r} but the bundle says {model.version!r}")
        except (BundleError, RankerError) as exc:
            self._reject(version, f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:  # a failed download may succeed later: retried at the next check
            self.last_error = f"model {version} not fetched: {type(exc).__name__}: {exc}"
            self.on_event("model_fetch_failed", {"version": version, "reason": self.last_error})
            return None
        return model

    def _refresh_experiment(self) -> None:
        read = getattr(self.source, "current_experiment", None)
        if read is None:
            return
        try:
            experiment: Experiment | None = read()
        except ExperimentError as exc:  # a bad definition never replaces a good one
            self.last_error = str(exc)
            self.on_event("experiment_refused", {"reason": str(exc)})
            return
        except Exception as exc:
            self.on_event("experiment_unreadable", {"reason": f"{type(exc).__name__}: {exc}"})
            return
        if experiment == self._experiment_seen and (experiment is None or self._split is not None):
            return
        if experiment is None:
            if self._split is not None:
                self.on_event("experiment_ended", {"experiment": self._split.assigner.experiment.name})
            self._split, self._experiment_seen = None, None
            return
        models: dict[str, LoadedModel] = {}
        for version in experiment.bundles:
            model = self._load(version)
            if model is None:  # never half-applied: everyone keeps the pointer's model
                self.on_event("experiment_not_applied", {"experiment": experiment.name, "bundle": version})
                self._experiment_seen = experiment
                return
            models[version] = model
        self._split, self._experiment_seen = _LiveSplit(Assigner(experiment), models), experiment
        gc.freeze()
        self.on_event("experiment_live", {"experiment": experiment.name, "split": experiment.split()})

    def _reject(self, version: str, reason: str) -> None:
        self._failed[version] = reason
        self.last_error = f"model {version} refused: {reason}"
        self.on_event(
            "model_load_failed",
            {"version": version, "reason": reason, "serving": self._model.version if self._model else None},
        )
