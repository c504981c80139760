"""The README's example runs as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_page_example_runs_as_pasted(tmp_path: Path) -> None:
    """ "A page in a few lines" runs in a fresh interpreter and prints a 200 page."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## A page in a few lines\n\n```python\n(.*?)```", readme, re.S)
    assert match is not None
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith('200 b\'{"sections":')
