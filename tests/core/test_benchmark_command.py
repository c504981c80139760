"""The benchmark command's verdicts: a missed target fails the run that measured it."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import benchmarks.__main__ as command
import pytest
from benchmarks import _report
from benchmarks._common import Row, at_least, at_most, exactly, info


def test_targets_say_met_or_missed_and_informational_rows_say_nothing() -> None:
    assert Row("a", 1.3, at_most(1.3)).verdict == "met"
    assert Row("a", 1.31, at_most(1.3)).verdict == "MISSED"
    assert Row("b", 0.9, at_least(0.9)).verdict == "met"
    assert Row("b", 0.89, at_least(0.9)).verdict == "MISSED"
    assert Row("c", 1, exactly(1)).verdict == "met"
    assert Row("c", 2, exactly(1)).verdict == "MISSED"
    assert Row("d", 123.0, info("microseconds")).verdict == ""
    assert "MISSED" in Row("b", 0.5, at_least(0.9, "why")).line()
    assert Row("b", 0.5, at_least(0.9, "why")).target.text == ">= 0.9 (why)"


def _fake_group(*rows: Row) -> types.ModuleType:
    module = types.ModuleType("fake")

    async def run(quick: bool) -> list[Row]:
        return list(rows)

    module.run = run  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("value", "status"),
    [(0.95, 0), (0.5, 1)],
)
def test_the_command_exits_1_when_a_target_is_missed(
    value: float, status: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    group = _fake_group(Row("ratio", value, at_least(0.9)), Row("time", 5.0, info("us")))
    monkeypatch.setattr(command, "GROUPS", {"fake": group})
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--quick"])
    assert command.main() == status
    out = capsys.readouterr().out
    assert ("MISSED: ratio" in out) == bool(status)
    assert f"2 figures, {status} targets missed" in out


def test_docs_get_the_table_between_their_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"before\n{_report.BEGIN}\nold\n{_report.END}\nafter\n")
    monkeypatch.setattr(_report, "DOC", doc)
    _report.write_docs([Row("ratio", 0.95, at_least(0.9), group="http")], complete=True)
    text = doc.read_text()
    assert text.startswith("before\n")
    assert text.endswith("after\n")
    assert "old" not in text
    assert "| http | ratio | 0.95x | >= 0.9 | met |" in text
