# Shared by the scripts: make .venv and install the project, install Debian packages.
# Sourced, not run. Usage: ensure_venv [uv pip install arguments...];
# apt_install command:package...
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

# Each argument is command:package; the package is installed when the command is
# missing. Daemons live in /usr/sbin, which a user's PATH may lack: looked up there too.
apt_install() {
    local missing=()
    for pair in "$@"; do
        local cmd="${pair%%:*}"
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${pair##*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "+ apt-get install ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}
