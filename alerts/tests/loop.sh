#!/bin/sh
# Run every promtool unit test of alerts/tests N times in a row (default 50) and print, per file,
# how many runs passed. A test whose result depends on the order promtool evaluates rule groups in
# (random) fails some of the runs. Exit 1 when any run failed; the first failure's output is kept
# in $TMPDIR/dbperf-promtool-loop-<file>.log.
#
#     sh alerts/tests/loop.sh            # 50 runs of each file
#     sh alerts/tests/loop.sh 200 host.yml
set -u
runs=${1:-50}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")" || exit 2
command -v promtool >/dev/null || { echo "loop.sh: promtool is not installed" >&2; exit 2; }
files=${*:-$(ls ./*.yml | sed 's|^\./||')}
status=0
for file in $files; do
    passed=0
    log="${TMPDIR:-/tmp}/dbperf-promtool-loop-$file.log"
    rm -f "$log"
    i=0
    while [ "$i" -lt "$runs" ]; do
        i=$((i + 1))
        if promtool test rules "$file" >"$log.run" 2>&1; then
            passed=$((passed + 1))
        elif [ ! -e "$log" ]; then
            mv "$log.run" "$log"
        fi
    done
    rm -f "$log.run"
    echo "$file: $passed/$runs passed"
    [ "$passed" -eq "$runs" ] || { status=1; echo "  first failure: $log"; }
done
exit $status
