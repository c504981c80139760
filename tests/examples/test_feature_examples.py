"""Every example in examples/features/ runs as its docstring says, and shows its feature.

Each runs in a fresh interpreter, as a reader would run it
(``python -m examples.features.NAME`` from the repository root). The Redis
example gets a real redis-server (tests/redis_server.py) through ``REDIS_URL``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ROOT / "examples" / "features"
NAMES = sorted(p.stem for p in FEATURES.glob("*.py") if p.stem != "__init__")

#: A line each example must print: the feature, seen working.
SHOWS = {
    "custom_scope": "segments fetched from the source: ['premium', 'standard']",
    "invalidation": "after invalidate(user_id=alice)    bob: HIT",
    "layered_redis": "instance B: HIT",
    "metrics": 'batchpage_pages_total{page="homepage",status="200"} 3.0',
    "seed_page": '"partialFailure": false',
    "streaming": '{"section":"after0ms","data":["instant"]',
    "sync_source": "threads abandoned: 2, calls refused: 2",
}


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"examples.features.{name}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"examples.features.{name} failed:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("name", [n for n in NAMES if n != "layered_redis"])
def test_the_example_runs_and_shows_its_feature(name: str) -> None:
    """It exits 0 and prints the line that shows its feature."""
    assert SHOWS[name] in run_example(name)


@pytest.mark.redis
def test_the_layered_redis_example_runs_against_a_real_redis(redis_server: RedisServer) -> None:
    """Two instances share one Redis: B reads what A fetched; A's invalidation reaches B."""
    out = run_example("layered_redis", {"REDIS_URL": redis_server.url})
    assert SHOWS["layered_redis"] in out
    assert "instance B after A invalidated: MISS" in out
    with redis_server.client() as client:
        assert client.dbsize() == 0  # it leaves nothing behind


def test_the_layered_redis_example_without_redis_says_what_it_needs() -> None:
    """Without REDIS_URL it stops at once with a message naming the variable."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "examples.features.layered_redis"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert "REDIS_URL=redis://" in done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_each_example_has_a_docstring_and_is_listed(name: str) -> None:
    """A module docstring says what it shows and how to run it; the index lists it."""
    doc = ast.get_docstring(ast.parse((FEATURES / f"{name}.py").read_text()))
    assert doc, f"examples/features/{name}.py has no docstring"
    assert f"examples.features.{name}" in doc
    index = ast.get_docstring(ast.parse((FEATURES / "__init__.py").read_text())) or ""
    assert f"``{name}``" in index
    assert f"examples/features/{name}.py" in (ROOT / "docs" / "examples.md").read_text()
    assert name in SHOWS
