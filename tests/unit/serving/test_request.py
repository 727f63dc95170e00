"""Request validation: every malformed request is a precise 400, JWT identity mismatches 403."""

from __future__ import annotations

import base64
import json

import pytest
from recpipe.serving.request import MAX_BODY_BYTES, RequestError, parse_body, parse_query


def test_get_parameters_become_a_typed_request() -> None:
    req = parse_query(
        {
            "user_id": "u-1",
            "k": "25",
            "device": "mobile",
            "utc_offset_minutes": "-300",
            "explain": "true",
            "exclude": "a, b,,c",
            "include_categories": "books,music",
            "exclude_categories": "garden",
        }
    )
    assert (req.user_id, req.k, req.explain) == ("u-1", 25, True)
    assert req.context.device == "mobile" and req.context.utc_offset_minutes == -300
    assert req.exclude == ["a", "b", "c"]
    assert req.filters.include_categories == ["books", "music"]
    assert req.filters.exclude_categories == ["garden"]


def test_defaults() -> None:
    req = parse_query({"user_id": "u"})
    assert (req.k, req.explain, req.diversity, req.exclude) == (10, False, 0.0, [])
    assert req.context.cart == [] and req.context.device is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "user_id: field required"),
        ({"user_id": ""}, "user_id: String should match pattern"),
        ({"user_id": "bad id with spaces"}, "user_id: String should match pattern"),
        ({"user_id": "u", "k": "0"}, "k: Input should be greater than or equal to 1"),
        ({"user_id": "u", "k": "101"}, "k: Input should be less than or equal to 100"),
        ({"user_id": "u", "k": "ten"}, "k: must be an integer (ASCII digits), got 'ten'"),
        ({"user_id": "u", "explain": "yes"}, "explain: must be true or false"),
        ({"user_id": "u", "device": "toaster"}, "context.device: Input should be"),
        ({"user_id": "u", "utc_offset_minutes": "5000"}, "context.utc_offset_minutes: Input should be less"),
        ({"user_id": "u", "colour": "red"}, "unknown query parameter(s): colour"),
        ({"user_id": "u", "diversity": "0.5"}, "unknown query parameter(s): diversity"),
        ({"user_id": "u", "exclude": "ok,not ok"}, "exclude.1: String should match pattern"),
    ],
)
def test_bad_query_parameters_are_refused_precisely(params: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_query(params)
    assert err.value.status == 400
    assert message in err.value.message


def test_post_body_with_everything() -> None:
    body = {
        "user_id": "u",
        "k": 3,
        "context": {"device": "web", "utc_offset_minutes": 60, "page": "home", "cart": ["i1"]},
        "filters": {"include_categories": ["books"], "exclude_categories": []},
        "exclude": ["i2"],
        "explain": True,
        "diversity": 1,
    }
    req = parse_body(json.dumps(body))
    assert req.context.cart == ["i1"] and req.context.page == "home"
    assert req.diversity == 1.0 and req.exclude == ["i2"]


def test_base64_body_is_decoded() -> None:
    raw = base64.b64encode(json.dumps({"user_id": "u", "k": 2}).encode()).decode()
    assert parse_body(raw, is_base64=True).k == 2


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (None, "invalid_request", "request body is required"),
        ('{"user_id": "u",', "malformed_json", "request body is not valid JSON"),
        ("[1, 2]", "invalid_request", "body must be a JSON object"),
        ('{"user_id": "u", "k": "10"}', "invalid_request", "k: Input should be a valid integer"),
        ('{"user_id": "u", "explain": "yes"}', "invalid_request", "explain: Input should be a valid boolean"),
        ('{"user_id": "u", "colour": 1}', "invalid_request", "colour: unknown field"),
        (
            '{"user_id": "u", "diversity": 1.5}',
            "invalid_request",
            "diversity: Input should be less than or equal to 1",
        ),
        (
            '{"user_id": "u", "context": {"cart": ["a"' + ', "a"' * 200 + "]}}",
            "invalid_request",
            "context.cart: List should have at most 200",
        ),
        ('{"user_id": "u", "filters": {"brand": ["x"]}}', "invalid_request", "filters.brand: unknown field"),
        (
            '{"user_id": "u", "context": {"cart": "i1"}}',
            "invalid_request",
            "context.cart: Input should be a valid list",
        ),
    ],
)
def test_bad_bodies_are_refused_precisely(raw: str | None, code: str, message: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_body(raw)
    assert (err.value.status, err.value.code) == (400, code)
    assert message in err.value.message


def test_oversized_body_is_413() -> None:
    raw = json.dumps({"user_id": "u", "exclude": ["x" * 100] * (MAX_BODY_BYTES // 100)})
    with pytest.raises(RequestError) as err:
        parse_body(raw)
    assert err.value.status == 413


def test_jwt_subject_is_the_user_and_another_user_is_forbidden() -> None:
    assert parse_query({"k": "3"}, subject="me").user_id == "me"
    assert parse_body('{"user_id": "me"}', subject="me").user_id == "me"
    for call in (
        lambda: parse_query({"user_id": "you"}, subject="me"),
        lambda: parse_body('{"user_id": "you"}', subject="me"),
    ):
        with pytest.raises(RequestError) as err:
            call()
        assert err.value.status == 403
