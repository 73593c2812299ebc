"""The method tables of README.md and docs/results.md are the committed JSON's, and the regenerator touches only
their blocks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import readme_tables
from benchmarks.methods import table, targets_summary

ROOT = Path(__file__).resolve().parents[2]
RESULT = "benchmarks/results/methods_resnet20_full.json"


@pytest.mark.parametrize("document", readme_tables.DOCUMENTS)
def test_the_readme_tables_match_the_committed_results(document: str) -> None:
    path = ROOT / document
    text = path.read_text(encoding="utf-8")
    assert readme_tables.BLOCK.search(text), f"{document} has no generated table block"
    assert readme_tables.render(text, root=path.parent)[1] == []


def test_a_stale_block_is_regenerated_and_nothing_else_changes(tmp_path: Path) -> None:
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    shutil.copy(ROOT / RESULT, tmp_path / RESULT)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nprose before\n<!-- table: {RESULT} -->\nold numbers\n<!-- /table -->\nprose after\n")
    with pytest.raises(SystemExit, match=f"stale tables .*README.md: {RESULT}"):
        readme_tables.main(["--readme", str(readme), "--check"])
    assert "old numbers" in readme.read_text()  # --check changes nothing
    readme_tables.main(["--readme", str(readme)])
    expected = table(json.loads((ROOT / RESULT).read_text()))
    assert readme.read_text() == (f"# title\n\nprose before\n<!-- table: {RESULT} -->\n{expected}\n"
                                  "<!-- /table -->\nprose after\n")
    readme_tables.main(["--readme", str(readme), "--check"])  # now current: no exit


@pytest.mark.parametrize("content, message", [
    (None, r"nothing.json is not a readable method-comparison result \(FileNotFoundError"),
    ("{not json", r"nothing.json is not a readable method-comparison result \(JSONDecodeError"),
    ('{"rows": []}', r"nothing.json is not a readable method-comparison result \(KeyError"),
])
def test_an_unreadable_result_file_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "benchmarks/results").mkdir(parents=True)
        (tmp_path / "benchmarks/results/nothing.json").write_text(content)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- table: benchmarks/results/nothing.json -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match=message):
        readme_tables.main(["--readme", str(readme)])


def test_unpaired_or_mistyped_markers_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """A block without its end would otherwise run to the next block's end and delete the prose between."""
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    shutil.copy(ROOT / RESULT, tmp_path / RESULT)
    readme = tmp_path / "README.md"
    for text in (f"<!-- table: {RESULT} -->\nno end\nprose\n<!-- table: {RESULT} -->\n<!-- /table -->\n",
                 f"<!-- table: {RESULT}  -->\n<!-- /table -->\n"):  # two spaces: not a marker
        readme.write_text(text)
        with pytest.raises(SystemExit, match="well-formed blocks"):
            readme_tables.main(["--readme", str(readme)])
        assert readme.read_text() == text
    with pytest.raises(SystemExit, match="no file at .*missing.md"):
        readme_tables.main(["--readme", str(tmp_path / "missing.md")])


def test_several_files_are_rendered_from_their_own_folders_and_none_written_when_one_fails(tmp_path: Path) -> None:
    """docs/results.md names the results from docs/ (``../benchmarks/...``); a failure in any file
    leaves every file as it was."""
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / RESULT, tmp_path / RESULT)
    readme, doc = tmp_path / "README.md", tmp_path / "docs/results.md"
    readme.write_text(f"<!-- table: {RESULT} -->\nold\n<!-- /table -->\n")
    doc.write_text(f"<!-- table: ../{RESULT} -->\nold\n<!-- /table -->\n"
                   "<!-- table: ../nothing.json -->\n<!-- /table -->\n")
    before = readme.read_text(), doc.read_text()
    with pytest.raises(SystemExit, match=r"docs/results.md: \.\./nothing.json is not a readable"):
        readme_tables.main(["--readme", str(readme), str(doc)])
    assert (readme.read_text(), doc.read_text()) == before
    doc.write_text(f"<!-- table: ../{RESULT} -->\nold\n<!-- /table -->\n")
    readme_tables.main(["--readme", str(readme), str(doc)])
    expected = table(json.loads((ROOT / RESULT).read_text()))
    assert readme.read_text() == f"<!-- table: {RESULT} -->\n{expected}\n<!-- /table -->\n"
    assert doc.read_text() == f"<!-- table: ../{RESULT} -->\n{expected}\n<!-- /table -->\n"
    readme_tables.main(["--readme", str(readme), str(doc), "--check"])


def test_the_default_files_are_checked_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # as make bench runs it
    readme_tables.main(["--check"])


def test_a_missing_second_file_is_refused_before_the_first_is_written(tmp_path: Path) -> None:
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    shutil.copy(ROOT / RESULT, tmp_path / RESULT)
    readme = tmp_path / "README.md"
    readme.write_text(f"<!-- table: {RESULT} -->\nold\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="no file at .*missing.md"):
        readme_tables.main(["--readme", str(readme), str(tmp_path / "missing.md")])
    assert "old" in readme.read_text()


def test_a_targets_block_summarises_several_results_and_pairs_with_its_own_end(tmp_path: Path) -> None:
    other = "benchmarks/results/methods_vgg16_bn_w50_full.json"
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    for name in (RESULT, other):
        shutil.copy(ROOT / name, tmp_path / name)
    readme = tmp_path / "README.md"
    readme.write_text(f"<!-- targets: {RESULT} {other} -->\nold\n<!-- /targets -->\nprose\n"
                      f"<!-- table: {RESULT} -->\nold\n<!-- /table -->\n")
    readme_tables.main(["--readme", str(readme)])
    expected = targets_summary([json.loads((ROOT / n).read_text()) for n in (RESULT, other)])
    assert readme.read_text() == (f"<!-- targets: {RESULT} {other} -->\n{expected}\n<!-- /targets -->\nprose\n"
                                  f"<!-- table: {RESULT} -->\n{table(json.loads((ROOT / RESULT).read_text()))}\n"
                                  "<!-- /table -->\n")
    for text in (f"<!-- targets: {RESULT} -->\nold\n<!-- /table -->\n",  # closed by the other kind's marker
                 f"<!-- table: {RESULT} {other} -->\nold\n<!-- /table -->\n"):  # a table names one file
        readme.write_text(text)
        with pytest.raises(SystemExit, match=r"well-formed blocks \(first marker outside one: line 1\)"):
            readme_tables.main(["--readme", str(readme)])
        assert readme.read_text() == text
    # files that cannot share one summary: their own reason, not "unreadable"
    data = json.loads((ROOT / other).read_text())
    (tmp_path / other).write_text(json.dumps({**data, "operating_drop": 0.01}))
    readme.write_text(f"<!-- targets: {RESULT} {other} -->\nold\n<!-- /targets -->\n")
    with pytest.raises(SystemExit, match=r"^error: .*README.md: .*_full.json .*_full.json: the result files use "
                                         r"different operating points \(drops \[0.001, 0.01\]\)"):
        readme_tables.main(["--readme", str(readme)])
