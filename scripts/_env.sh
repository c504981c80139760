# Shared by scripts/run and scripts/test: make .venv with uv and install the project.
# Sourced, not run. Usage: ensure_venv [uv pip install arguments...]
set -euo pipefail

ensure_uv() {
    if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
        echo "+ installing uv from PyPI" >&2
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    fi
    if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
}

ensure_venv() {
    ensure_uv
    if [ ! -x .venv/bin/python ]; then
        "${UV[@]}" venv --quiet --python python3 .venv
    fi
    VIRTUAL_ENV="$PWD/.venv" "${UV[@]}" pip install --quiet "$@"
}
