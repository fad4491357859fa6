# Shared by scripts/demo and scripts/test: install what is missing, quietly on re-runs.

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have_pg_server() {
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1
}

apt_install() {
    [ "$#" -gt 0 ] || return 0
    echo "installing Debian packages: $*" >&2
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# ensure_venv EXTRAS: .venv with a Python >= 3.11 and this package (pip install -e "EXTRAS").
ensure_venv() {
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        echo "dbperf needs Python 3.11 or newer as python3 (or set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        "$python" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
        "$python" -m venv .venv
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1"
}
