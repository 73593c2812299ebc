"""Rows of one result file join another only when both measure the same thing, and a row taken
out of a committed result and merged back gives that result again."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import merge_results
from benchmarks.merge_results import MergeError, merge
from benchmarks.methods import check_targets, iso_accuracy, table

ROOT = Path(__file__).resolve().parents[2]
RESNET = json.loads((ROOT / "benchmarks/results/methods_resnet20_full.json").read_text())
VGG = json.loads((ROOT / "benchmarks/results/methods_vgg16_bn_w50_full.json").read_text())


def split(data: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` without the rows ``names``, and a result of the same run holding only them (and the base)."""
    rest = copy.deepcopy(data)
    for name in names:
        del rest["methods"][name]
    rest["iso_accuracy"], rest["targets"] = iso_accuracy(rest), check_targets(rest)
    new = copy.deepcopy(data)
    new["methods"] = {n: copy.deepcopy(data["methods"][n]) for n in ["static_base", *names]}
    new["machine"]["platform"] = "Linux-another-kernel-build"  # a fresh machine of the same kind
    return rest, new


@pytest.mark.parametrize("data, names", [
    (RESNET, ["static_x0.5_long"]),  # the best alternative on speed at batch 256 in no pass, on MACs in none
    (RESNET, ["cascade_x0.25_long", "sdn_joint"]),  # the best alternatives: the targets change without them
    (VGG, ["static_x0.375", "s2dnas_oneshot_budget"]),  # a searched row (seeds, super-network) and a static one
])
def test_a_row_merged_back_gives_the_committed_result(data: dict[str, Any], names: list[str]) -> None:
    rest, new = split(data, names)
    merged = merge(rest, new, source="runs/part.json")
    assert list(merged["methods"]) == list(data["methods"])  # each row back in its place
    assert merged["methods"] == data["methods"]
    assert merged["iso_accuracy"] == data["iso_accuracy"]
    assert merged["targets"] == data["targets"]
    assert merged["merged"][0]["methods"] == names and merged["merged"][0]["from"] == "runs/part.json"
    assert "static_base" not in merged["merged"][0]["methods"]
    assert rest["methods"].keys() == data["methods"].keys() - set(names)  # the target itself untouched


def test_the_best_alternative_changes_when_a_cheaper_one_is_merged() -> None:
    rest, new = split(RESNET, ["cascade_x0.25_long"])
    before = {t["key"]: t["value"] for t in rest["targets"] if t["method"] == "s2dnas_oneshot_budget"}
    after = {t["key"]: t["value"] for t in merge(rest, new)["targets"] if t["method"] == "s2dnas_oneshot_budget"}
    assert "cascade_x0.25_long" not in before["macs_vs_best"]
    assert after["macs_vs_best"] == "9.3% vs cascade_x0.25_long 12.7%"


def test_a_merged_table_names_what_was_merged_and_from_where() -> None:
    rest, new = split(RESNET, ["static_x0.5_long"])
    text = table(merge(rest, new, source="runs/r_05long.json"))
    assert "`static_x0.5_long` from `runs/r_05long.json`" in text
    assert "merge_results" not in table(RESNET)  # an unmerged table says nothing of it


def _base(d: dict[str, Any]) -> dict[str, Any]:
    return d["base"]


@pytest.mark.parametrize("change, message", [
    (lambda d: _base(d).update(val_accuracy=0.9), "the base's val_accuracy differs"),
    (lambda d: _base(d).update(macs=1), "the base's macs differs"),
    (lambda d: d.update(base_model="resnet56"), "the files differ in 'base_model'"),
    (lambda d: d["protocol"].update(final_epochs=8), "the files differ in 'protocol'"),
    (lambda d: d["machine"].update(cpu_count=16), "different kinds of machine \\(cpu_count 2 against 16\\)"),
    (lambda d: d.update(seeds=[0]), r"'s2dnas_oneshot_budget' ran with seeds \[0, 1, 2\], the target's searched "
                                     r"rows with \[0\]; run it with --seeds 0"),
    (lambda d: d.update(supernet="runs/sn_other"), "'s2dnas_oneshot_budget' loaded the super-network runs/sn_other"),
])
def test_files_that_measure_different_things_are_refused(change: Any, message: str) -> None:
    rest, new = split(RESNET, ["s2dnas_oneshot_budget"])
    if "seeds" in message:  # the target's seeds differ from the row's
        change(rest)
    else:
        change(new)
    with pytest.raises(MergeError, match=message):
        merge(rest, new)


def test_a_row_already_there_is_refused_unless_replaced() -> None:
    _, new = split(RESNET, ["static_x0.375"])
    new["methods"]["static_x0.375"] = changed = copy.deepcopy(RESNET["methods"]["static_x0.375"])
    changed["build_seconds"] = 1.0
    with pytest.raises(MergeError, match="already holds 'static_x0.375'; pass --replace"):
        merge(RESNET, new)
    merged = merge(RESNET, new, replace=True)
    assert list(merged["methods"]) == list(RESNET["methods"])
    assert merged["methods"]["static_x0.375"]["build_seconds"] == 1.0


def test_an_untimed_row_is_refused_where_the_target_is_timed_and_a_missing_row_is_named() -> None:
    rest, new = split(RESNET, ["static_x0.5_long"])
    for p in new["methods"]["static_x0.5_long"]["points"]:
        p["measured_speedup"] = p["measured_speedup_b1"] = None
    with pytest.raises(MergeError, match="'static_x0.5_long' has no measured speed-up .* without --no-speed"):
        merge(rest, new)
    with pytest.raises(MergeError, match="no row 'static_x0.75' to merge; the file holds static_base, static_x0.5_long"):
        merge(rest, new, methods=["static_x0.75"])


def test_the_command_line_writes_the_target_its_table_and_plot_or_one_line_and_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rest, new = split(RESNET, ["static_x0.5_long"])
    into, part = tmp_path / "methods.json", tmp_path / "part.json"
    into.write_text(json.dumps(rest))
    part.write_text(json.dumps(new))
    bad = copy.deepcopy(new)
    bad["base"]["test_accuracy"] = 0.5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{not json")
    for name, message in (("bad.json", "error: the base's test_accuracy differs"),
                          ("broken.json", "broken.json is not a readable method-comparison result \\(JSONDecodeError"),
                          ("missing.json", "missing.json is not a readable .*FileNotFoundError")):
        with pytest.raises(SystemExit, match=message):
            merge_results.main([str(tmp_path / name), "--into", str(into)])
        assert json.loads(into.read_text()) == rest and not (tmp_path / "methods.md").exists()
    merge_results.main([str(part), "--into", str(into)])
    merged = json.loads(into.read_text())
    assert merged["methods"] == RESNET["methods"]
    assert (tmp_path / "methods.md").read_text() == table(merged) + "\n"
    assert (tmp_path / "methods.png").stat().st_size > 0
    assert "added static_x0.5_long" in capsys.readouterr().out
