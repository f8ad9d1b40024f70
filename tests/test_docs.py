"""The guides' examples run as written: every ```python block of docs/api.md, in order, in a fresh folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.slow
def test_api_guide_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOCS / "api.md")
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_guide"}
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)
        except Exception as error:  # name the block that failed
            raise AssertionError(f"docs/api.md block {number} failed: {error!r}\n{block}") from error
    printed = capsys.readouterr().out
    assert "800 800" in printed  # ingested samples and labels, as the guide says
    assert "outliers.k: must be an integer >= 1, got 0" in printed
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert (tmp_path / "ws" / "reports" / "audit-latest.json").exists()
