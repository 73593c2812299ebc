"""The run report's text (the plots and the whole report are covered by tests/cli/test_cli_run.py)."""
from __future__ import annotations

from s2dnas.report import _work_text, aim_text


def test_the_report_names_the_budget_when_there_is_no_accuracy_target() -> None:
    """Under a budget results.json records no target accuracy (None), and the report says the budget."""
    target = {"target_accuracy": None, "macs_budget": 12_500_000.0, "latency_budget_ms": None}
    assert aim_text({"target_val_accuracy": None, "calibration_target": target}) == "MACs budget 12.50M"
    target = {"target_accuracy": None, "macs_budget": None, "latency_budget_ms": 0.25}
    assert aim_text({"target_val_accuracy": None, "calibration_target": target}) == "latency budget 0.250 ms per input"
    target = {"target_accuracy": 0.9, "macs_budget": None, "latency_budget_ms": None}
    assert aim_text({"target_val_accuracy": 0.9, "calibration_target": target}) == "target val accuracy 90.00%"


def test_the_time_line_adds_the_earlier_processes_work_only_when_a_resume_hid_it() -> None:
    resumed = {"supernet_seconds": 0.1, "supernet_epoch_seconds": 600.0, "search_seconds": 12.0,
               "search_candidate_seconds": 700.0, "final_training_seconds": 900.0,
               "final_training_epoch_seconds": 2400.0, "total_seconds": 950.0}
    assert _work_text(resumed) == (" (this process; across resumes: super-network epochs 600s, candidates scored 700s, "
                                   "training epochs 2400s)")
    # an uninterrupted run: its clock covers the candidates and the epochs (and more)
    straight = {"search_seconds": 710.0, "search_candidate_seconds": 700.0, "final_training_seconds": 2450.0,
                "final_training_epoch_seconds": 2400.0}
    assert _work_text(straight) == ""
    assert _work_text({"search_seconds": 5.0, "final_training_seconds": 9.0}) == ""  # written before it was recorded
