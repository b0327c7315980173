#!/bin/sh
# `make install PREFIX=... [DESTDIR=...]` and `make uninstall` into a temporary folder: the
# installed binary is the tested one ($FMBATCH, passed as INSTALL_BIN so nothing is rebuilt),
# runs, and the documentation lands in share/doc/fmbatch; uninstall removes both.
B=${FMBATCH:-build/fmbatch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ok() { if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: got '$2', want '$3'"; fi; }
# A make of its own: not the jobserver or the variables of the make that runs the tests.
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s INSTALL_BIN="$B" "$@"; }

mk install PREFIX="$tmp/p" >"$tmp/log" 2>&1
ok install_rc $? 0
ok install_same_binary "$(cmp -s "$B" "$tmp/p/bin/fmbatch" && echo same)" same
ok install_mode "$(stat -c %a "$tmp/p/bin/fmbatch" 2>&1)" 755
ok install_runs "$("$tmp/p/bin/fmbatch" --version 2>&1 | cut -d' ' -f1)" fmbatch
ok install_docs "$(cd "$tmp/p/share/doc/fmbatch" 2>/dev/null && ls | tr '\n' ' ')" \
    "ARCHITECTURE.md DECISIONS.md JOBS.md NUMERICS.md README.md "
ok install_readme "$(cmp -s README.md "$tmp/p/share/doc/fmbatch/README.md" && echo same)" same

mk install PREFIX=/opt/fmb DESTDIR="$tmp/stage" >>"$tmp/log" 2>&1
ok install_destdir "$(cmp -s "$B" "$tmp/stage/opt/fmb/bin/fmbatch" && echo same)" same

mk uninstall PREFIX="$tmp/p" >>"$tmp/log" 2>&1
ok uninstall_rc $? 0
ok uninstall_gone "$(find "$tmp/p" ! -type d | wc -l)" 0
[ -s "$tmp/log" ] && sed 's/^/    /' "$tmp/log" | head -n 5
exit 0
