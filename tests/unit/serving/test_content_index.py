"""Content index: in-process (published directory + pointer) and OpenSearch (recorded requests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import Transport
from recpipe.adapters.content_index import (
    INDEX_MAPPINGS,
    InProcessContentIndex,
    InProcessContentIndexWriter,
    OpenSearchContentIndex,
    OpenSearchContentIndexWriter,
    search_body,
)
from recpipe.ports import SERVED_VERSION, ContentDoc, DependencyError, RetryableError

#: Popularity as the retrain workflow indexes it: the item table's [0, 1] log-scaled value.
DOCS = [
    ContentDoc("m1", "The Garden of Words", ("animation", "drama"), "rain and shoes", popularity=0.4),
    ContentDoc("m2", "Garden State", ("comedy", "drama"), "a road trip home", popularity=0.6),
    ContentDoc("m3", "Space Garden", ("scifi",), "plants in orbit", popularity=0.1),
    ContentDoc("m4", "Heat", ("crime", "drama"), "a heist in los angeles", popularity=0.8),
    ContentDoc("m5", "Toy Story", ("animation", "comedy"), "toys come alive", popularity=1.0),
]


def ids(results: list[tuple[str, float]]) -> list[str]:
    return [i for i, _ in results]


def test_no_query_is_popularity_order() -> None:
    index = InProcessContentIndex(docs=DOCS)
    assert ids(index.search(text=None, categories=[], k=3)) == ["m5", "m4", "m2"]


def test_categories_filter_and_add_up() -> None:
    index = InProcessContentIndex(docs=DOCS)
    found = ids(index.search(text=None, categories=["animation", "comedy"], k=10))
    assert set(found) == {"m1", "m2", "m5"}
    assert found[0] == "m5", "two matching categories and the most popular"


def test_text_scores_title_matches_without_removing_other_results() -> None:
    index = InProcessContentIndex(docs=DOCS)
    found = ids(index.search(text="garden", categories=[], k=5))
    assert set(found[:3]) == {"m1", "m2", "m3"}
    assert set(found) == {"m1", "m2", "m3", "m4", "m5"}


def test_exclusions_and_k() -> None:
    index = InProcessContentIndex(docs=DOCS)
    assert ids(index.search(text=None, categories=[], k=2, exclude=["m5", "m4"])) == ["m2", "m1"]
    assert index.search(text=None, categories=["western"], k=5) == []


def test_publish_then_switch_versions_through_the_pointer(tmp_path: Path) -> None:
    writer = InProcessContentIndexWriter(tmp_path)
    clock = [0.0]
    reader = InProcessContentIndex(tmp_path, refresh_s=10, clock=lambda: clock[0])
    with pytest.raises(DependencyError, match="no version has been published"):
        reader.search(text=None, categories=[], k=1)
    assert writer.publish("v1", DOCS[:2]) == 2
    clock[0] = 11.0
    assert ids(reader.search(text=None, categories=[], k=5)) == ["m2", "m1"]
    assert writer.publish("v2", DOCS) == 5
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m2"], "not re-read before refresh_s"
    clock[0] = 22.0
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m5"]
    assert reader.version == "v2"
    assert (tmp_path / "CURRENT").read_text().strip() == "v2"
    assert not list(tmp_path.glob(".*tmp")), "no staging left behind"


def test_a_broken_published_version_keeps_the_previous_one(tmp_path: Path) -> None:
    writer = InProcessContentIndexWriter(tmp_path)
    writer.publish("v1", DOCS)
    clock = [0.0]
    reader = InProcessContentIndex(tmp_path, refresh_s=1, clock=lambda: clock[0])
    assert reader.version == "v1", "loaded at construction"
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "docs.jsonl").write_text("{not json\n")
    (tmp_path / "CURRENT").write_text("v2")
    clock[0] = 5.0
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m5"] and reader.version == "v1"


def test_background_reload_keeps_searches_on_the_current_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from recpipe.adapters import content_index

    writer = InProcessContentIndexWriter(tmp_path)
    writer.publish("v1", DOCS[:2])
    clock = [0.0]
    reader = InProcessContentIndex(tmp_path, refresh_s=1, background=True, clock=lambda: clock[0])
    assert reader.version == "v1", "built at construction (init), before any search"
    writer.publish("v2", DOCS)
    release = threading.Event()
    real_read = content_index.read_docs

    def slow_read(path: Path) -> list[ContentDoc]:
        assert release.wait(5), "the test never released the load"
        return real_read(path)

    monkeypatch.setattr(content_index, "read_docs", slow_read)
    clock[0] = 5.0
    # The load of v2 is held back: the search answers from v1 at once instead of waiting.
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m2"] and reader.version == "v1"
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m2"], "one load at a time"
    release.set()
    reader.wait_for_refresh(5)
    assert reader.version == "v2"
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m5"]


def test_a_request_searches_the_index_of_the_version_it_is_served_with(tmp_path: Path) -> None:
    """A rollback switches the pointer a moment before the model: requests still served by the
    other bundle keep its index, a version not in memory yet degrades (never another version's
    answer), and a bundle without an index of its own reads the pointer's."""
    writer = InProcessContentIndexWriter(tmp_path)
    writer.publish("v1", DOCS[:2])
    writer.publish("v2", DOCS)
    clock = [0.0]
    reader = InProcessContentIndex(tmp_path, refresh_s=1, background=True, clock=lambda: clock[0])
    assert reader.version == "v2"
    SERVED_VERSION.set("v2")
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m5"]
    SERVED_VERSION.set("v1")  # served by v1's bundle: v1 is loaded off the request path
    with pytest.raises(RetryableError, match="v1 is being loaded"):
        reader.search(text=None, categories=[], k=1)
    reader.wait_for_refresh(5)
    assert ids(reader.search(text=None, categories=[], k=5)) == ["m2", "m1"]
    writer.switch("v1")  # the rollback's content step, before the model pointer moves
    clock[0] = 5.0
    reader.search(text=None, categories=[], k=1)
    reader.wait_for_refresh(5)
    assert reader.version == "v1"
    SERVED_VERSION.set("v2")  # a request still served by v2's bundle keeps v2's index
    assert ids(reader.search(text=None, categories=[], k=1)) == ["m5"]
    SERVED_VERSION.set("hand-made")  # no index of its own: the pointer's
    assert ids(reader.search(text=None, categories=[], k=5)) == ["m2", "m1"]
    SERVED_VERSION.set(None)
    assert ids(reader.search(text=None, categories=[], k=5)) == ["m2", "m1"]


def test_invalid_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid content index version"):
        InProcessContentIndexWriter(tmp_path).publish("../escape", DOCS)


# ---- OpenSearch against recorded request/response pairs -------------------------------------------
class RecordingTransport(Transport):
    """opensearchpy's Transport with the network replaced: records each request, answers from a script."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[str, str, Any, Any]] = []
        self.responses: list[Any] = []

    def perform_request(  # noqa: PLR0917 - the signature opensearchpy calls
        self, method: str, url: str, params: Any = None, body: Any = None, timeout: Any = None,
        ignore: Any = (), headers: Any = None,
    ) -> Any:  # fmt: skip
        if body is not None and not isinstance(body, dict):
            body = self.serializer.dumps(body) if not isinstance(body, str | bytes) else body
        self.requests.append((method, url, params, body))
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _text(body: str | bytes) -> str:
    return body.decode() if isinstance(body, bytes) else body


def client(responses: list[Any]) -> Any:
    from opensearchpy import OpenSearch

    c = OpenSearch(hosts=["http://search.invalid:9200"], transport_class=RecordingTransport)
    c.transport.responses = list(responses)
    return c


SEARCH_RESPONSE = {
    "took": 3,
    "timed_out": False,
    "hits": {
        "total": {"value": 2, "relation": "eq"},
        "max_score": 7.9,
        "hits": [
            {"_index": "recpipe-content-v7", "_id": "m5", "_score": 7.9},
            {"_index": "recpipe-content-v7", "_id": "m1", "_score": 5.2},
        ],
    },
}


def test_search_request_and_response() -> None:
    c = client([SEARCH_RESPONSE])
    index = OpenSearchContentIndex(c, "recpipe-content", timeout_s=0.02)
    found = index.search(text="toy story", categories=["animation", "comedy"], k=2, exclude=["m9"])
    assert found == [("m5", 7.9), ("m1", 5.2)]
    method, url, params, body = c.transport.requests[0]
    assert (method, url) == ("POST", "/recpipe-content/_search")
    assert params["request_timeout"] == 0.02
    assert body == {
        "size": 2,
        "_source": False,
        "query": {
            "function_score": {
                "query": {
                    "bool": {
                        "must": [{"match_all": {}}],
                        "filter": [{"terms": {"categories": ["animation", "comedy"]}}],
                        "should": [
                            {"multi_match": {"query": "toy story", "fields": ["title^2", "text"]}},
                            {
                                "constant_score": {
                                    "filter": {"term": {"categories": "animation"}},
                                    "boost": 1.0,
                                }
                            },
                            {"constant_score": {"filter": {"term": {"categories": "comedy"}}, "boost": 1.0}},
                        ],
                        "must_not": [{"ids": {"values": ["m9"]}}],
                    }
                },
                "field_value_factor": {"field": "popularity", "modifier": "log1p", "missing": 0},
                "boost_mode": "sum",
            }
        },
    }


def test_search_goes_to_the_served_versions_index_and_falls_back_to_the_alias() -> None:
    from opensearchpy.exceptions import NotFoundError

    c = client(
        [
            SEARCH_RESPONSE,
            NotFoundError(404, "index_not_found_exception", {}),
            SEARCH_RESPONSE,
            SEARCH_RESPONSE,
        ]
    )
    index = OpenSearchContentIndex(c, "recpipe-content")
    SERVED_VERSION.set("V7")
    assert index.search(text=None, categories=[], k=2) == [("m5", 7.9), ("m1", 5.2)]
    SERVED_VERSION.set("hand-made")  # published without an index of its own
    assert index.search(text=None, categories=[], k=2) == [("m5", 7.9), ("m1", 5.2)]
    index.search(text=None, categories=[], k=2)  # remembered: no second 404
    assert [url for _, url, _, _ in c.transport.requests] == [
        "/recpipe-content-v7/_search",
        "/recpipe-content-hand-made/_search",
        "/recpipe-content/_search",
        "/recpipe-content/_search",
    ]


def test_search_without_query_is_match_all_by_popularity() -> None:
    body = search_body(None, [], 5, [])
    assert body["query"]["function_score"]["query"] == {"bool": {"must": [{"match_all": {}}]}}


def test_search_failures_become_dependency_errors() -> None:
    from opensearchpy.exceptions import ConnectionTimeout, TransportError

    index = OpenSearchContentIndex(client([ConnectionTimeout("TIMEOUT", "timed out", None)]), "a")
    with pytest.raises(RetryableError):
        index.search(text=None, categories=[], k=1)
    index = OpenSearchContentIndex(client([TransportError(503, "unavailable", {})]), "a")
    with pytest.raises(RetryableError, match="HTTP 503"):
        index.search(text=None, categories=[], k=1)
    index = OpenSearchContentIndex(client([{"unexpected": True}]), "a")
    with pytest.raises(DependencyError, match="unexpected response"):
        index.search(text=None, categories=[], k=1)


def test_publish_creates_the_version_bulk_loads_and_switches_the_alias_atomically() -> None:
    bulk_ok = {
        "took": 5,
        "errors": False,
        "items": [{"index": {"_id": d.item_id, "status": 201}} for d in DOCS],
    }
    c = client(
        [
            False,  # HEAD /recpipe-content-v8 -> does not exist
            {"acknowledged": True},  # PUT index
            bulk_ok,  # POST _bulk
            {"_shards": {"total": 2}},  # POST _refresh
            True,  # HEAD /_alias/recpipe-content
            {"recpipe-content-v7": {"aliases": {"recpipe-content": {}}}},  # GET _alias
            {"acknowledged": True},  # POST _aliases
        ]
    )
    writer = OpenSearchContentIndexWriter(c, "recpipe-content")
    assert writer.publish("v8", DOCS) == 5
    calls = [(m, u) for m, u, _, _ in c.transport.requests]
    assert calls == [
        ("HEAD", "/recpipe-content-v8"),
        ("PUT", "/recpipe-content-v8"),
        ("POST", "/_bulk"),
        ("POST", "/recpipe-content-v8/_refresh"),
        ("HEAD", "/_alias/recpipe-content"),
        ("GET", "/_alias/recpipe-content"),
        ("POST", "/_aliases"),
    ]
    assert c.transport.requests[1][3] == INDEX_MAPPINGS
    bulk_lines = [json.loads(line) for line in _text(c.transport.requests[2][3]).splitlines() if line]
    assert bulk_lines[0] == {"index": {"_index": "recpipe-content-v8", "_id": "m1"}}
    assert bulk_lines[1]["categories"] == ["animation", "drama"] and bulk_lines[1]["popularity"] == 0.4
    assert c.transport.requests[-1][3] == {
        "actions": [
            {"remove": {"index": "recpipe-content-v7", "alias": "recpipe-content"}},
            {"add": {"index": "recpipe-content-v8", "alias": "recpipe-content"}},
        ]
    }


def test_publish_reports_failed_documents() -> None:
    bulk_failed = {
        "took": 5,
        "errors": True,
        "items": [{"index": {"_id": "m1", "status": 400, "error": {"type": "mapper_parsing_exception"}}}],
    }
    c = client([True, bulk_failed])
    with pytest.raises(DependencyError, match="documents failed"):
        OpenSearchContentIndexWriter(c, "recpipe-content").publish("v8", DOCS[:1])


@pytest.mark.skipif(
    "not __import__('os').environ.get('OPENSEARCH_URL')", reason="no live OpenSearch (OPENSEARCH_URL)"
)
def test_live_cluster_round_trip() -> None:  # pragma: no cover - needs a cluster
    import os

    from opensearchpy import OpenSearch

    live = OpenSearch(hosts=[os.environ["OPENSEARCH_URL"]])
    alias = "recpipe-test-content"
    assert OpenSearchContentIndexWriter(live, alias).publish("t1", DOCS) == 5
    found = OpenSearchContentIndex(live, alias, timeout_s=5).search(text="garden", categories=["drama"], k=5)
    assert set(ids(found)) == {"m1", "m2", "m4"}
