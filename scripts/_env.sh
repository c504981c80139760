# Shared by scripts/run and scripts/test: make .venv and install the project.
# Sourced, not run. Usage: ensure_venv [uv pip install arguments...]
set -euo pipefail

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        if command -v uv >/dev/null 2>&1; then
            uv venv --quiet --python python3 .venv
        else
            # Debian's python3 needs python3-venv; a system-wide pip install is
            # refused there (PEP 668), so uv goes into the project's own venv.
            python3 -m venv .venv
        fi
    fi
    local uv
    if command -v uv >/dev/null 2>&1; then
        uv=uv
    else
        if [ ! -x .venv/bin/uv ]; then
            echo "+ installing uv from PyPI into .venv" >&2
            .venv/bin/python -m pip install --quiet uv
        fi
        uv=.venv/bin/uv
    fi
    VIRTUAL_ENV="$PWD/.venv" "$uv" pip install --quiet "$@"
}
