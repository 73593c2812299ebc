"""Rows of one result file join another only when both measure the same thing, and a row taken
out of a committed result and merged back gives that result again."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import merge_results
from benchmarks.merge_results import MergeError, add_seeds, merge
from benchmarks.methods import aggregate_seeds, check_targets, iso_accuracy, oracle_row, table

ROOT = Path(__file__).resolve().parents[2]
RESNET = json.loads((ROOT / "benchmarks/results/methods_resnet20_full.json").read_text())
VGG = json.loads((ROOT / "benchmarks/results/methods_vgg16_bn_w50_full.json").read_text())
# Imported rows go last, in the order they were merged: only the latest one comes back to its place.
LAST_IMPORTED = list(RESNET["runs"])[-1]


def split(data: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` without the rows ``names`` (and their oracle and imported runs), and a result of
    the same run holding only them and the base, timed on a fresh machine of the same kind."""
    rest = copy.deepcopy(data)
    for name in [*names, *(["oracle"] if "s2dnas_rl" in names else [])]:
        del rest["methods"][name]
        rest["runs"].pop(name, None)
    if "merged" in rest:  # as it was before these rows were merged in
        rest["merged"] = [m for m in rest["merged"] if m["methods"] != names]
    rest["iso_accuracy"], rest["targets"] = iso_accuracy(rest), check_targets(rest)
    new = copy.deepcopy(data)
    new["methods"] = {n: copy.deepcopy(data["methods"][n]) for n in ["static_base", *names, "oracle"]
                      if n in data["methods"] and (n != "oracle" or "s2dnas_rl" in names)}
    new["machine"]["platform"] = "Linux-another-kernel-build"
    return rest, new


@pytest.mark.parametrize("data, names", [
    (RESNET, ["static_x0.5_long"]),
    (RESNET, ["cascade_x0.25_long", "sdn_joint"]),  # the best alternatives: the targets change without them
    (RESNET, [LAST_IMPORTED]),  # imported (goes last): its run comes along
    (VGG, ["static_x0.375", "s2dnas_oneshot_budget"]),  # a searched row (seeds, super-network) and a static one
    (VGG, ["s2dnas_rl"]),  # its oracle comes along
])
def test_a_row_merged_back_gives_the_committed_result(data: dict[str, Any], names: list[str]) -> None:
    rest, new = split(data, names)
    snapshot = copy.deepcopy(rest)
    merged = merge(rest, new, source="runs/part.json")
    assert list(merged["methods"]) == list(data["methods"])  # each row back in its place
    assert merged["methods"] == data["methods"]
    assert merged["runs"] == data["runs"]
    assert merged["iso_accuracy"] == data["iso_accuracy"]
    assert merged["targets"] == data["targets"]
    *earlier, last = merged["merged"]
    assert earlier == snapshot.get("merged", [])
    assert (last["methods"], last["from"], last["command"], last["platform"]) == (
        names, "runs/part.json", data["command"], "Linux-another-kernel-build")
    assert rest == snapshot  # the target itself is not changed


def test_seed_order_and_the_platform_string_do_not_matter() -> None:
    rest, new = split(VGG, ["s2dnas_oneshot_budget"])
    rest["seeds"] = [2, 0, 1]  # as typed on the command line
    assert merge(rest, new)["methods"]["s2dnas_oneshot_budget"] == VGG["methods"]["s2dnas_oneshot_budget"]


def test_the_best_alternative_changes_when_a_cheaper_one_is_merged() -> None:
    rest, new = split(RESNET, ["cascade_x0.25_long"])
    before = {t["key"]: t["value"] for t in rest["targets"] if t["method"] == "s2dnas_oneshot_budget"}
    after = {t["key"]: t["value"] for t in merge(rest, new)["targets"] if t["method"] == "s2dnas_oneshot_budget"}
    assert "cascade_x0.25_long" not in before["macs_vs_best"]
    assert "cascade_x0.25_long" in after["macs_vs_best"] and "cascade_x0.25_long" in after["speed_b256"]


def test_a_merged_table_names_what_was_merged_and_from_where() -> None:
    rest, new = split(VGG, ["static_x0.5_long"])
    assert "Timed in more than one pass" not in table(rest)
    text = table(merge(rest, new, source="runs/r_05long.json"))
    assert "`static_x0.5_long` from `runs/r_05long.json`" in text
    assert "Timed in more than one pass" in text and "Timed in one pass" not in text
    assert "merge_results" not in table(VGG)  # an unmerged table says nothing of it


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
    (lambda d: d.update(speed_thread_options=[2]), r"different thread options \(\[1, 2\] against \[2\]\)"),
    (lambda d: [e["supernet"].update(train_seconds=1.0) for e in d["methods"]["s2dnas_oneshot_budget"]["per_seed"]
                .values()], "'s2dnas_oneshot_budget' loaded another super-network"),
    (lambda d: [e["search_target"].update({"calibration.macs_budget": 0.25}) for e in
                d["methods"]["s2dnas_oneshot_budget"]["per_seed"].values()], "searched for .*0.25.*, the target's "
                                                                              "rows for .*0.15"),
])
def test_files_that_measure_different_things_are_refused(change: Any, message: str) -> None:
    rest, new = split(VGG, ["s2dnas_oneshot_budget"])
    # the target keeps a row of the same super-network and search target (as its random control would be)
    rest["methods"]["s2dnas_oneshot_random_budget"] = copy.deepcopy(VGG["methods"]["s2dnas_oneshot_budget"])
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
    for name in ("static_x0.75", "static_base", "oracle"):
        with pytest.raises(MergeError, match=f"no row '{name}' to merge; the file holds static_x0.5_long$"):
            merge(rest, new, methods=[name])


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
    for value in ("", " , "):
        with pytest.raises(SystemExit, match="--methods .* names no row; expected comma-separated row names"):
            merge_results.main([str(part), "--into", str(into), "--methods", value])
    merge_results.main([str(part), "--into", str(into), "--methods", "static_x0.5_long, static_x0.5_long"])
    merged = json.loads(into.read_text())
    assert merged["methods"] == RESNET["methods"]
    assert (tmp_path / "methods.md").read_text() == table(merged) + "\n"
    assert (tmp_path / "methods.png").stat().st_size > 0
    assert "added static_x0.5_long" in capsys.readouterr().out


def test_the_cpu_model_counts_only_where_both_files_record_it() -> None:
    rest, new = split(RESNET, ["static_x0.5_long"])
    new["machine"]["cpu"] = "AMD EPYC"  # the committed target predates the record: merged
    assert "static_x0.5_long" in merge(rest, new)["methods"]
    rest["machine"]["cpu"] = "Intel Xeon"
    with pytest.raises(MergeError, match="different kinds of machine \\(cpu 'Intel Xeon' against 'AMD EPYC'\\)"):
        merge(rest, new)


def test_the_cpu_model_of_the_targets_own_run_decides() -> None:
    def timed_on(r: dict[str, Any], cpu: str) -> None:
        r["timing"] = {"identity": {"machine": {"cpu": cpu}}, "pass": "2026-12-02T11:23:32"}

    rest, new = split(VGG, ["static_x0.5_long"])
    timed_on(new["methods"]["static_x0.5_long"], "AMD EPYC")
    merged = merge(rest, new, source="runs/part.json")  # the target's CPU was not recorded: merged, and said
    assert "`static_x0.5_long` from `runs/part.json` (" in table(merged) and ", timed on AMD EPYC)" in table(merged)
    _, other = split(VGG, ["static_x0.25_long"])  # a row merged earlier does not make its CPU the target's
    timed_on(other["methods"]["static_x0.25_long"], "Intel(R) Xeon(R) Processor")
    assert ", timed on Intel(R) Xeon(R) Processor)" in table(merge(merged, other, replace=True))
    timed_on(rest["methods"]["static_base"], "Intel(R) Xeon(R) Processor")  # the target's base records it
    with pytest.raises(MergeError, match="'static_x0.5_long' was timed on AMD EPYC, the target's base on Intel"):
        merge(rest, new)
    rest["machine"]["cpu"] = "AMD EPYC"  # the target's machine records it: that one counts first
    assert "static_x0.5_long" in merge(rest, new)["methods"]


def test_a_replaced_row_leaves_its_earlier_merge_record() -> None:
    rest, new = split(VGG, ["static_x0.5_long", "static_x0.25_long"])
    once = merge(rest, new, source="runs/first.json")
    _, again = split(VGG, ["static_x0.5_long"])
    twice = merge(once, again, replace=True, source="runs/second.json")
    assert [(m["from"], m["methods"]) for m in twice["merged"]] == [
        ("runs/first.json", ["static_x0.25_long"]),
        ("runs/second.json", ["static_x0.5_long"])]
    thrice = merge(twice, again, replace=True, source="runs/third.json")  # an emptied record goes
    assert [m["from"] for m in thrice["merged"]] == ["runs/first.json", "runs/third.json"]


def seeds_of(data: dict[str, Any], names: list[str], seeds: list[int]) -> dict[str, Any]:
    """A result of the same run holding the base and the searched rows ``names`` with only ``seeds``
    (as ``--seeds`` would have run them), the oracle on its first seed's network."""
    new = copy.deepcopy(data)
    new["seeds"] = seeds
    new["methods"] = {"static_base": copy.deepcopy(data["methods"]["static_base"])}
    for name in names:
        per_seed = data["methods"][name]["per_seed"]
        new["methods"][name] = aggregate_seeds({k: copy.deepcopy(per_seed[str(k)]) for k in seeds},
                                               base_macs=data["base"]["macs"])
    if "s2dnas_rl" in names:
        new["methods"]["oracle"] = oracle_row(new["methods"]["s2dnas_rl"], base_macs=data["base"]["macs"])
    new["iso_accuracy"], new["targets"] = iso_accuracy(new), check_targets(new)
    return new


@pytest.mark.parametrize("first, then", [([0], [1, 2]), ([1, 2], [0]), ([2], [0, 1])])
def test_seeds_run_apart_and_added_give_the_row_of_one_run(first: list[int], then: list[int]) -> None:
    names = ["s2dnas_rl", "s2dnas_oneshot_budget"]
    part, more = seeds_of(VGG, names, first), seeds_of(VGG, names, then)
    snapshot = copy.deepcopy(part)
    joined = add_seeds(part, more, source="runs/more.json")
    assert joined["seeds"] == [0, 1, 2]
    for name in names:
        assert joined["methods"][name] == VGG["methods"][name]  # means, spreads, per-seed entries
    assert joined["methods"]["oracle"] == VGG["methods"]["oracle"]  # seed 0's network, whichever file held it
    assert joined["iso_accuracy"] == {n: VGG["iso_accuracy"][n] for n in ["static_base", *names]}
    assert [(m["methods"], m["seeds"], m["from"]) for m in joined["seeds_added"]] == [(names, then, "runs/more.json")]
    assert part == snapshot
    said = {(1, 2): "seeds 1, 2 of `s2dnas_rl`, `s2dnas_oneshot_budget` from `runs/more.json` (",
            (0,): "seed 0 of `s2dnas_rl`, `s2dnas_oneshot_budget` from `runs/more.json` (",
            (0, 1): "seeds 0, 1 of `s2dnas_rl`, `s2dnas_oneshot_budget` from `runs/more.json` ("}[tuple(then)]
    assert said in table(joined)
    # the three seeds, once joined, go into the table that lacks the rows like a row run with all of them
    rest, _ = split(VGG, names)
    merged = merge(rest, joined, source="runs/joined.json")
    assert merged["methods"] == VGG["methods"] and merged["targets"] == VGG["targets"]
    assert list(merged["methods"]) == list(VGG["methods"])
    assert merged["merged"][-1]["seeds_added"] == joined["seeds_added"]  # where its seeds came from, kept
    assert ("`s2dnas_rl`, `s2dnas_oneshot_budget` from `runs/joined.json` (" in table(merged)
            and "(its seed" in table(merged) and "from `runs/more.json`" in table(merged))


def test_seeds_added_one_at_a_time_keep_every_record_and_the_lowest_seeds_oracle() -> None:
    one = add_seeds(seeds_of(VGG, ["s2dnas_rl"], [2]), seeds_of(VGG, ["s2dnas_rl"], [1]), source="runs/s1.json")
    assert one["methods"]["oracle"]["of"] == "s2dnas_rl seed 1"
    joined = add_seeds(seeds_of(VGG, ["s2dnas_rl"], [0]), one, source="runs/s12.json")  # a joined file joined again
    assert joined["methods"]["s2dnas_rl"] == VGG["methods"]["s2dnas_rl"]
    assert joined["methods"]["oracle"] == VGG["methods"]["oracle"]
    assert [(m["from"], m["seeds"]) for m in joined["seeds_added"]] == [("runs/s1.json", [1]), ("runs/s12.json", [2])]
    assert "Timed in more than one pass: the rows (or seeds) added" in table(joined)
    rest, _ = split(VGG, ["s2dnas_rl"])  # merged into a table: both records in one parenthesis, in join order
    said = table(merge(rest, joined, source="runs/joined.json"))
    assert ("`s2dnas_rl` from `runs/joined.json` (" in said and "(its seed 1 of `s2dnas_rl` from `runs/s1.json` ("
            in said and "); seed 2 of `s2dnas_rl` from `runs/s12.json` (" in said and said.count("(its seed") == 1)


def test_a_row_short_of_the_targets_seeds_is_refused_with_the_way_to_add_them() -> None:
    rest, _ = split(VGG, ["s2dnas_rl"])
    with pytest.raises(MergeError, match=r"ran with seeds \[0\], the target's searched rows with \[0, 1, 2\]; run "
                                         r"it with --seeds 0,1,2 \(or seed by seed, joined with --add-seeds\)"):
        merge(rest, seeds_of(VGG, ["s2dnas_rl"], [0]))


def _untimed(d: dict[str, Any]) -> None:
    for e in d["methods"]["s2dnas_rl"]["per_seed"].values():
        for p in e["points"]:
            p["measured_speedup"] = None
    d["methods"]["s2dnas_rl"] = aggregate_seeds({int(k): e for k, e in d["methods"]["s2dnas_rl"]["per_seed"].items()},
                                                base_macs=d["base"]["macs"])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(seeds_of(VGG, ["s2dnas_rl"], [0, 1])), "seed 0 is in both files"),
    (lambda d: d["methods"].update(s2dnas_oneshot_budget=VGG["methods"]["s2dnas_oneshot_budget"]),
     "the target holds s2dnas_rl, the file s2dnas_rl, s2dnas_oneshot_budget"),
    (lambda d: d["methods"].update(static_x0_5=VGG["methods"]["static_x0.5"]),
     "same searched rows, and nothing else; the target holds s2dnas_rl, the file s2dnas_rl, static_x0_5"),
    (lambda d: d["methods"].pop("s2dnas_rl"), "the target holds s2dnas_rl, the file none"),
    (lambda d: d["base"].update(test_accuracy=0.5), "the base's test_accuracy differs"),
    (lambda d: d.update(seeds=[1]), r"the file's 's2dnas_rl' holds seeds \['1', '2'\] with points, the file \[1\]"),
    (lambda d: d["methods"]["s2dnas_rl"].pop("per_seed"),
     r"the file's 's2dnas_rl' holds seeds \[\] with points, the file"),
    (_untimed, "'s2dnas_rl' was measured differently in the two files"),
    (lambda d: [q.pop("measured_speedup_b1") for e in d["methods"]["s2dnas_rl"]["per_seed"].values()
                for q in e["points"]], r"measured differently .*\['measured_speedup_b1'\]"),
    (lambda d: [e.update(supernet={"source": "x", "config_hash": "y", "epochs": 8, "train_seconds": 1.0})
                for e in d["methods"]["s2dnas_rl"]["per_seed"].values()],
     "'s2dnas_rl''s seeds loaded different super-networks"),
    (lambda d: [e.update(search_reward="accuracy_in_budget", search_target={"search.reward": "accuracy_in_budget"})
                for e in d["methods"]["s2dnas_rl"]["per_seed"].values()],
     "'s2dnas_rl''s seeds searched for different targets"),
])
def test_seeds_that_do_not_belong_to_the_same_rows_are_refused(change: Any, message: str) -> None:
    part, more = seeds_of(VGG, ["s2dnas_rl"], [0]), seeds_of(VGG, ["s2dnas_rl"], [1, 2])
    change(more)
    with pytest.raises(MergeError, match=message):
        add_seeds(part, more)


def test_the_command_line_adds_seeds_or_says_in_one_line_why_not(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    into, more = tmp_path / "rl.json", tmp_path / "rl12.json"
    into.write_text(json.dumps(seeds_of(VGG, ["s2dnas_rl"], [0])))
    more.write_text(json.dumps(seeds_of(VGG, ["s2dnas_rl"], [1, 2])))
    before = into.read_text()
    for extra in (["--methods", "s2dnas_rl"], ["--replace"]):
        with pytest.raises(SystemExit, match="--add-seeds adds seeds to every searched row of the target; it takes "
                                             "neither --methods nor --replace"):
            merge_results.main([str(more), "--into", str(into), "--add-seeds", *extra])
    assert into.read_text() == before and not (tmp_path / "rl.md").exists()
    merge_results.main([str(more), "--into", str(into), "--add-seeds"])
    assert "added s2dnas_rl seeds 1, 2 (now 0, 1, 2)" in capsys.readouterr().out
    assert json.loads(into.read_text())["methods"]["s2dnas_rl"] == VGG["methods"]["s2dnas_rl"]
    assert (tmp_path / "rl.md").read_text() == table(json.loads(into.read_text())) + "\n"
    with pytest.raises(SystemExit, match="^error: seed 1 is in both files; run the missing seeds only"):
        merge_results.main([str(more), "--into", str(into), "--add-seeds"])


def test_a_joined_rows_seed_records_follow_it_into_a_table_and_out_on_replace() -> None:
    names = ["s2dnas_rl", "s2dnas_oneshot_budget"]
    joined = add_seeds(seeds_of(VGG, names, [0]), seeds_of(VGG, names, [1, 2]), source="runs/more.json")
    rest, _ = split(VGG, names)
    one = merge(rest, joined, methods=["s2dnas_rl"], source="runs/joined.json")  # one of its two rows
    assert [m["methods"] for m in one["merged"][-1]["seeds_added"]] == [["s2dnas_rl"]]
    assert "`s2dnas_rl` from `runs/joined.json` (" in table(one) and "`s2dnas_oneshot_budget` from" not in table(one)
    _, again = split(VGG, ["s2dnas_rl"])  # the row run again with all its seeds: the seed record goes
    replaced = merge(one, again, replace=True, source="runs/all_seeds.json")
    assert [(m["from"], m.get("seeds_added")) for m in replaced["merged"]] == [("runs/all_seeds.json", None)]
    assert "runs/more.json" not in table(replaced)


def test_malformed_merge_records_are_refused_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    into, more = tmp_path / "rl.json", tmp_path / "rl12.json"
    into.write_text(json.dumps(seeds_of(VGG, ["s2dnas_rl"], [0])))
    bad = seeds_of(VGG, ["s2dnas_rl"], [1, 2])
    bad["seeds_added"] = [{"methods": ["s2dnas_rl"], "seeds": [1]}]  # no from, no date
    more.write_text(json.dumps(bad))
    before = into.read_text()
    with pytest.raises(SystemExit, match="rl12.json is not a method-comparison result .*records of what was merged"):
        merge_results.main([str(more), "--into", str(into), "--add-seeds"])
    bad["seeds_added"] = []
    bad["methods"]["s2dnas_rl"]["per_seed"]["1"] = 3  # an entry that is not one
    more.write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match=r"^error: the file's 's2dnas_rl' holds seeds \['1', '2'\] with points"):
        merge_results.main([str(more), "--into", str(into), "--add-seeds"])
    assert into.read_text() == before and not (tmp_path / "rl.md").exists()
