"""Tests of the JSONL journal: round trip, crash repair, corruption, lookup."""
from __future__ import annotations

import doctest
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import s2dnas.search.journal
from s2dnas.errors import CheckpointError
from s2dnas.search import Journal, sample_key


def _record(i: int) -> dict:
    return {
        "sample": {"ratio": i % 3, "concat": i % 2},
        "architecture": {"stages": [{"ratio": 0.5}], "id": i},
        "metrics": {"accuracy": 0.9, "macs": 1e6 + i},
        "reward": 0.1 * i,
        "seconds": 1.5,
    }


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "journal.jsonl"
    journal = Journal(path)
    assert journal.records() == [] and len(journal) == 0
    written = [journal.append(_record(i)) for i in range(3)]
    assert [r["index"] for r in written] == [0, 1, 2]
    assert all(isinstance(r["time"], float) for r in written)

    reread = Journal(path).records()
    assert reread == written
    assert reread[2]["architecture"] == {"stages": [{"ratio": 0.5}], "id": 2}
    assert reread[1]["metrics"]["macs"] == 1e6 + 1
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["reward"] == 0.0


def test_append_fills_defaults_and_converts_numpy(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    record = journal.append({"sample": {"a": np.int64(1)}, "reward": np.float32(0.5)})
    assert record["sample"] == {"a": 1} and record["reward"] == 0.5
    assert record["architecture"] is None and record["metrics"] == {}
    assert set(record) == {"index", "sample", "architecture", "metrics", "reward", "seconds", "time"}


def test_append_rejects_bad_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(ValueError, match="`sample` dict"):
        journal.append({"reward": 1.0})
    with pytest.raises(ValueError, match="`reward`"):
        journal.append({"sample": {"a": 0}})
    with pytest.raises(TypeError):
        journal.append({"sample": {"a": 0}, "reward": 1.0, "metrics": {"x": object()}})
    assert not journal.path.exists() or journal.path.read_bytes() == b""


def test_truncated_last_line_is_ignored_then_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    for i in range(2):
        journal.append(_record(i))
    full_line = json.dumps({"index": 2, **_record(2)})
    with open(path, "a", encoding="utf-8") as handle:  # a crash in the middle of a write
        handle.write(full_line[: len(full_line) // 2])

    resumed = Journal(path)
    with caplog.at_level(logging.WARNING, logger="s2dnas.search.journal"):
        records = resumed.records()
    assert [r["index"] for r in records] == [0, 1]
    assert "truncated or corrupt last line 3" in caplog.text

    appended = resumed.append(_record(2))
    assert appended["index"] == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    assert Journal(path).records() == records + [appended]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({"index": 0, **_record(0)}), encoding="utf-8")
    journal = Journal(path)
    assert len(journal) == 1
    journal.append(_record(1))
    assert [json.loads(x)["index"] for x in path.read_text().splitlines()] == [0, 1]


def test_corrupt_middle_line_raises(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    for i in range(3):
        journal.append(_record(i))
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:10] + "#garbage"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"journal\.jsonl: line 2 is not a JSON object"):
        Journal(path).records()
    path.write_text(lines[0] + "\n[1, 2]\n" + lines[2] + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="line 2"):
        Journal(path).lookup({"ratio": 0})


def test_lookup_ignores_key_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"sample": {"ratio": 1, "concat": 0}, "reward": 0.3})
    journal.append({"sample": {"ratio": 2, "concat": 1}, "reward": 0.7})
    found = Journal(path).lookup({"concat": 1, "ratio": 2})
    assert found is not None and found["reward"] == 0.7 and found["index"] == 1
    assert journal.lookup({"concat": 1, "ratio": 1}) is None
    assert sample_key({"b": 1, "a": 0}) == sample_key({"a": 0, "b": 1}) == '{"a":0,"b":1}'
    # Mutating a returned record does not change the journal.
    found["reward"] = -1
    assert journal.lookup({"ratio": 2, "concat": 1})["reward"] == 0.7


def test_journal_sees_appends_from_another_instance(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    reader, writer = Journal(path), Journal(path)
    assert len(reader) == 0
    writer.append(_record(0))
    assert len(reader) == 1 and reader.lookup(_record(0)["sample"]) is not None


def test_doctests() -> None:
    result = doctest.testmod(s2dnas.search.journal)
    assert result.attempted > 0 and result.failed == 0
