"""Attribution joins exactly: a synthetic log whose clicks and purchases are known in advance."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from recpipe.domain.attribution import FeedbackEvent, attribute, newcombe_difference, report, wilson
from recpipe.domain.impressions import Impression, ShownItem, impression_from_record

T0 = 1_770_000_000.0
HOUR = 3600.0


def synthetic_log(seed: int = 7) -> tuple[list[Impression], list[FeedbackEvent], dict[str, Counter[str]]]:
    """Impressions of two variants and events with a known truth: which lists were clicked or
    bought from, per variant, position and source; plus events that must not be attributed."""
    rng = random.Random(seed)
    impressions: list[Impression] = []
    events: list[FeedbackEvent] = []
    truth: dict[str, Counter[str]] = {"control": Counter(), "treatment": Counter()}
    sources = ("cf", "session", "trending", "content")
    n_event = 0

    def event(user: str, item: str, type_: str, ts: float, rec: str | None) -> None:
        nonlocal n_event
        n_event += 1
        events.append(FeedbackEvent(f"e{n_event}", user, item, type_, ts, rec))

    for n in range(3000):
        variant = "control" if n % 2 else "treatment"
        user = f"u{n % 400}"
        ts = T0 + n * 10
        items = tuple(ShownItem(f"i{n}-{pos}", pos, (sources[(n + pos) % 4],)) for pos in range(1, 11))
        imp = Impression(f"r{n}", user, ts, f"m-{variant}", "ab", variant, items)
        impressions.append(imp)
        truth[variant]["impressions"] += 1
        p_click = 0.30 if variant == "treatment" else 0.20
        clicked = bought = False
        for item in items:
            if rng.random() < p_click / 3:
                event(user, item.item_id, "click", ts + 5, imp.recommendation_id)
                if rng.random() < 0.5:  # a repeated click on the same shown item counts once
                    event(user, item.item_id, "click", ts + 9, imp.recommendation_id)
                if not clicked:
                    truth[variant]["clicked"] += 1
                clicked = True
                truth[variant][f"pos{item.position}"] += 1
                truth[variant][f"src-{item.sources[0]}"] += 1
                if rng.random() < 0.2:
                    # half carry the id, half rely on last touch (the only list that showed it)
                    rec = imp.recommendation_id if rng.random() < 0.5 else None
                    event(user, item.item_id, "purchase", ts + 60, rec)
                    truth[variant]["converted"] += int(not bought)
                    bought = True
        # Events that must never be attributed:
        event(user, items[0].item_id, "click", ts + 2 * 24 * HOUR, imp.recommendation_id)  # too late
        event(user, "not-shown", "click", ts + 1, imp.recommendation_id)  # item not in the list
        event("someone-else", items[1].item_id, "click", ts + 1, imp.recommendation_id)  # other user
        event(user, items[2].item_id, "click", ts + 1, f"unknown-{n}")  # unknown id
        event(user, items[3].item_id, "view", ts + 1, imp.recommendation_id)  # not a click
    rng.shuffle(events)
    events.append(events[0])  # at-least-once delivery: a duplicated event changes nothing
    return impressions, events, truth


def test_report_counts_exactly_the_known_clicks_and_purchases() -> None:
    impressions, events, truth = synthetic_log()
    attribution = attribute(impressions + impressions[:10], events)  # duplicated impressions too
    assert attribution.unmatched == Counter(
        outside_window=3000, item_not_shown=3000, other_user=3000, unknown_recommendation_id=3000
    )
    body = report(impressions, attribution, experiment="ab")
    for variant in ("control", "treatment"):
        v = body["variants"][variant]
        t = truth[variant]
        assert v["exposures"] == {"impressions": t["impressions"], "users": 200}
        assert v["ctr"]["successes"] == t["clicked"] and v["ctr"]["n"] == t["impressions"]
        assert v["conversion"]["successes"] == t["converted"]
        for pos in range(1, 11):
            shown = v["by_position"][str(pos)]["shown"]
            assert shown == t["impressions"]
            assert round(v["by_position"][str(pos)]["ctr"] * shown) == t[f"pos{pos}"]
        for src in ("cf", "session", "trending", "content"):
            s = v["by_source"][src]
            assert round(s["ctr"] * s["shown"]) == t[f"src-{src}"]
    diff = body["differences"]["treatment - control"]["ctr"]
    expected = truth["treatment"]["clicked"] / 1500 - truth["control"]["clicked"] / 1500
    assert diff["difference"] == pytest.approx(expected)
    assert diff["ci95"][0] < expected < diff["ci95"][1] and diff["significant"]


def test_conversions_without_an_id_go_to_the_last_or_first_touch() -> None:
    shown = (ShownItem("x", 1, ("cf",)),)
    first = Impression("r1", "u", T0, "m", "ab", "control", shown)
    second = Impression("r2", "u", T0 + 100, "m", "ab", "control", shown)
    buy = FeedbackEvent("e1", "u", "x", "purchase", T0 + 200)
    assert set(attribute([first, second], [buy]).touches) == {("r2", "x")}
    assert set(attribute([first, second], [buy], touch="first").touches) == {("r1", "x")}
    late = FeedbackEvent("e2", "u", "x", "purchase", T0 + 3 * 24 * HOUR)
    assert not attribute([first, second], [late]).touches


def test_intervals() -> None:
    lo, hi = wilson(20, 100)
    assert lo == pytest.approx(0.1333, abs=1e-3) and hi == pytest.approx(0.2888, abs=1e-3)
    d, lo, hi = newcombe_difference(56, 70, 48, 80)  # Newcombe (1998), example (a)
    assert d == pytest.approx(-0.2) and lo == pytest.approx(-0.3339, abs=1e-3)
    assert hi == pytest.approx(-0.0524, abs=1e-3)


def test_an_archived_impression_round_trips_and_a_bad_one_is_refused() -> None:
    imp = Impression("r1", "u", T0, None, None, None, (ShownItem("x", 1, ("cf", "session")),))
    assert impression_from_record(imp.to_record()) == imp
    with pytest.raises(ValueError, match="malformed"):
        impression_from_record({"kind": "impression", "items": []})
