"""The demo's last line: what it got against the base, in words, for both kinds of operating point."""
from __future__ import annotations

from typing import Any

from s2dnas.cli.demo import plain_summary


def _results(**over: Any) -> dict[str, Any]:
    results = {"base": {"test_accuracy": 0.9332, "macs": 31_000_000},
               "test": {"accuracy": 0.9339, "macs_ratio": 0.132, "exit_fractions": [0.67, 0.25, 0.08]},
               "calibration": {"feasible": True}, "target_val_accuracy": None, "calibration_target": {}}
    return {**results, **over}


def test_budget_mode_says_the_budget_and_the_comparison() -> None:
    line = plain_summary(_results(calibration_target={"macs_budget": 0.15 * 31_000_000}))
    assert line.startswith("result: the dynamic network is right on 93.39% of the test images, the base on "
                           "93.32% (+0.07 points), and it spends 13.2% of the base's MACs per image on average "
                           "(7.6x fewer); 67%, 25%, 8% of the images leave at stages 1, 2, 3.")
    assert line.endswith("chosen on val for the best accuracy within 15% of the base's MACs.")
    missed = plain_summary(_results(calibration_target={"macs_budget": 0.01 * 31_000_000},
                                    calibration={"feasible": False}))
    assert missed.endswith("within 1% of the base's MACs (not possible on val, so the cheapest setting was kept).")


def test_target_mode_says_whether_the_target_was_reached() -> None:
    reached = plain_summary(_results(target_val_accuracy=0.9334, calibration_target={"target_accuracy": 0.9334}))
    assert reached.endswith("chosen on val for 93.34% val accuracy (the base's minus the tolerance): reached.")
    missed = plain_summary(_results(target_val_accuracy=0.9334, calibration={"feasible": False}))
    assert missed.endswith("not reached, so the most accurate setting was kept.")
