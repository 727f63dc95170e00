"""The resilience benchmark's arithmetic: per-phase figures and recovery time."""

from __future__ import annotations

from recpipe_dev.bench.resilience import Phase, Sample, summarise


def test_recovery_is_the_start_of_the_first_run_of_good_answers_after_the_fault() -> None:
    phase = Phase("redis_restarted_empty", fault_start=10.0, fault_end=15.0, cpu_s=0.5)
    # before and during the fault: degraded; after: two good, one degraded, then five good
    for t in range(10, 15):
        phase.samples.append(Sample(float(t), 5.0, 200, True, False))
    for t, good in ((15.2, True), (15.4, True), (15.6, False)):
        phase.samples.append(Sample(t, 6.0, 200, not good, good))
    for k in range(5):
        phase.samples.append(Sample(16.0 + k * 0.1, 7.0, 200, False, True))
    phase.samples.append(Sample(17.0, 900.0, 502, False, False))
    s = summarise(phase, cf_expected=True)
    assert s["recovery_s"] == 1.0  # 16.0 - 15.0
    assert s["requests"] == 14 and s["5xx"] == 1
    assert s["degraded_share"] == round(6 / 14, 3) and s["cf_share"] == round(7 / 14, 3)
    assert s["p50_ms"] == 6.0 and s["p99_ms"] == 900.0
    assert s["cpu_ms_per_request"] == round(500 / 14, 2)


def test_no_recovery_is_reported_as_none() -> None:
    phase = Phase("redis_paused", fault_start=1.0, fault_end=2.0)
    phase.samples = [Sample(2.0 + i, 5.0, 200, True, False) for i in range(10)]
    assert summarise(phase, cf_expected=True)["recovery_s"] is None
