"""The code in docs/*.md that is marked runnable runs, and prints what the page shows.

The convention, invisible on GitHub and on the docs site (HTML comments):

* ``<!-- runnable -->`` on the line before a ```` ```python ```` block starts a
  program: the block runs as a script of its own, in a fresh interpreter;
* ``<!-- runnable: continued -->`` before a later block of the same page adds
  that block to the program above it, so a page can explain a program in
  steps; the whole program runs once, after its last block;
* ``<!-- output -->`` before a ```` ```text ```` block after a runnable block
  says that the program, as it stands at that block, prints exactly that
  text (the program runs once per output block, and once whole).

Runnable blocks must not need a server: sources are simulated, the cache is
the memory cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_BLOCK = re.compile(
    r"<!-- (?P<mark>runnable|runnable: continued|output) -->\n"
    r"```(?P<lang>\w+)\n(?P<code>.*?)^```$",
    re.S | re.M,
)


@attrs.frozen
class Run:
    """One program as it stands after one of its blocks, and what it must print."""

    page: str
    line: int  #: where the block that ends this run starts
    code: str
    output: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def programs() -> list[Run]:
    """Every runnable program in docs/*.md: run whole, and up to each output block."""
    runs: list[Run] = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        code: str | None = None  # the program so far
        checked = False  # its last block's output was checked: no need to run it again
        line = 0
        for match in _BLOCK.finditer(text):
            mark, lang, block = match.group("mark", "lang", "code")
            where = f"{page.name}:{text.count(chr(10), 0, match.start()) + 1}"
            if mark == "output":
                assert lang == "text", f"{where}: an output block is ```text"
                assert code is not None, f"{where}: output of no runnable block"
                runs.append(Run(page.name, line, code, block))
                checked = True
                continue
            assert lang == "python", f"{where}: a runnable block is ```python"
            if mark == "runnable":
                if code is not None and not checked:
                    runs.append(Run(page.name, line, code))
                code = ""
            assert code is not None, f"{where}: continues no runnable block"
            code += block
            checked = False
            line = text.count("\n", 0, match.start()) + 2
        if code is not None and not checked:
            runs.append(Run(page.name, line, code))
    return runs


RUNS = programs()


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_runnable_docs_code_runs(run: Run, tmp_path: Path) -> None:
    """The program exits 0, and prints the output block that follows it, if any."""
    script = tmp_path / "example.py"
    script.write_text(run.code)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, f"{run.id} failed:\n{done.stderr}"
    if run.output is not None:
        assert done.stdout == run.output, f"{run.id} printed:\n{done.stdout}"


def test_the_key_pages_have_runnable_code() -> None:
    """The quickstart and the guides people copy from are checked, not just present."""
    pages = {r.page for r in RUNS}
    assert {"quickstart.md", "cache.md", "http.md", "testing.md", "observability.md"} <= pages
