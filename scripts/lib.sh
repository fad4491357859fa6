# Shared by scripts/demo and scripts/test: install what is missing, quietly on re-runs. The
# installers' own output (apt's progress, pip's warnings about this machine's index settings) goes
# to a temporary log that is shown only when they fail.

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have_pg_server() {
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1
}

# quietly COMMAND...: runs COMMAND with its output in a temporary log; on failure prints the log
# and what failed on stderr and returns COMMAND's exit status.
quietly() {
    local log status=0
    log="$(mktemp "${TMPDIR:-/tmp}/dbperf-install.XXXXXX")"
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        cat "$log" >&2
        echo "failed (exit status $status): $*" >&2
    fi
    rm -f "$log"
    return "$status"
}

apt_install() {
    [ "$#" -gt 0 ] || return 0
    echo "installing Debian packages: $*" >&2
    quietly $SUDO apt-get update -q
    quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
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
        quietly "$python" -m venv .venv
    fi
    quietly .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1"
}
