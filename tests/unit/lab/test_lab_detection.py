"""The failure-detection model against the bounds the reaper's rule implies."""

from __future__ import annotations

import pytest

from yadtq.lab.detection import model, schedule, study


def test_one_peer_detects_a_crash_between_t_minus_h_and_t_plus_h_and_on_average_at_t() -> None:
    m = model(interval=1.0, timeout=2.5, pauses=(1.4, 2.5, 3.6))
    assert m["delay_min"] >= 1.5 and m["delay_max"] <= 3.5
    assert m["delay_mean"] == pytest.approx(2.5, abs=0.03)
    assert m["false_positive_1.4"] == 0.0  # shorter than T - h: never declared dead
    assert m["false_positive_3.6"] == 1.0  # longer than T + h: always
    assert m["false_positive_2.5"] == pytest.approx(0.5, abs=0.03)


def test_more_peers_detect_sooner_and_a_shorter_timeout_trades_delay_for_false_positives() -> None:
    assert model(1.0, 2.5, peers=3)["delay_mean"] < model(1.0, 2.5, peers=1)["delay_mean"]
    frame = study(intervals=[0.5, 1.0], timeouts=[1.0, 2.5, 5.0], pauses=[2.0])
    assert len(frame) == 5  # (1.0, 1.0) is not a valid setting
    for _, group in frame.groupby("interval"):  # a longer timeout: slower, and fewer false alarms
        ordered = group.sort_values("timeout")
        assert ordered["delay_mean"].is_monotonic_increasing
        assert ordered["false_positive_2"].is_monotonic_decreasing
    # at the same timeout, a longer interval spreads the delay, so a 2 s pause is sometimes caught
    same_t = frame[frame["timeout"] == 2.5].set_index("interval")["false_positive_2"]
    assert same_t[0.5] == 0.0 < same_t[1.0]
    with pytest.raises(ValueError, match="interval < timeout"):
        model(2.0, 1.0)


def test_the_real_fault_schedule_has_every_kind_of_fault_and_a_live_peer() -> None:
    spec = schedule(interval=1.0, timeout=2.5)
    assert [f.action for f in spec.faults] == ["pause_for", "term", "start", "pause_for", "kill"]
    assert spec.faults[-1].at >= spec.faults[3].at + spec.faults[3].seconds + 2.0
