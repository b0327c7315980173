#!/bin/sh
# Test runner: runs every test binary in DIR and (unless --no-scripts) every tests/sh/*.sh.
# Each test prints lines "PASS name" or "FAIL name: why"; a binary or script that exits
# non-zero without printing a FAIL line counts as one failure. Ends with "N passed, N failed".
dir=$1
scripts=yes
[ "$2" = "--no-scripts" ] && scripts=no
pass=0
fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_one() {
    name=$1
    shift
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^(FAIL|NOTE) ' "$log"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc; last lines:"
        tail -n 15 "$log" | sed 's/^/    /'
        f=1
    fi
    echo "  $name: $p passed, $f failed ($(($(date +%s) - start))s)"
    pass=$((pass + p))
    fail=$((fail + f))
}
found=0
for t in "$dir"/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    case "$t" in *.o | *.d) continue ;; esac
    found=1
    run_one "$(basename "$t")" "$t"
done
if [ "$scripts" = yes ]; then
    for s in tests/sh/*.sh; do
        [ -f "$s" ] || continue
        found=1
        run_one "$(basename "$s")" sh "$s"
    done
fi
if [ "$found" = 0 ]; then
    echo "FAIL no test was found in $dir"
    fail=1
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
