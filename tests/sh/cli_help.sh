#!/bin/sh
# `fmbatch CMD --help` for the job commands: exits 0 and lists the command's options; every
# listed option is accepted by the command (not "unrecognized"), and an option listed only for
# another command is refused, so the help and the parser cannot drift (one table, cmd_job.c).
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cmds="run check status export retry prune report"
for c in $cmds; do
    "$F" "$c" --help >"$T/$c.help" 2>&1
    rc=$?
    sed -n 's/^  --\([a-z-]*\).*/\1/p' "$T/$c.help" | sort >"$T/$c.opts"
    if [ $rc -eq 0 ] && grep -q "^usage: fmbatch $c JOB.toml" "$T/$c.help" && grep -qx help "$T/$c.opts"; then
        echo "PASS help: $c --help exits 0 with its options"
    else
        echo "FAIL help: $c --help: rc $rc: $(cat "$T/$c.help")"
    fi
    bad=""
    for o in $(cat "$T/$c.opts"); do
        [ "$o" = help ] && continue
        if grep -q "^  --$o [^ ]" "$T/$c.help"; then v="--$o=1"; else v="--$o"; fi
        "$F" "$c" "$v" "$T/none.toml" >/dev/null 2>"$T/err"
        grep -q "unrecognized option" "$T/err" && bad="$bad $o"
    done
    if [ -z "$bad" ]; then echo "PASS help: every option $c lists is accepted"; else echo "FAIL help: $c refuses its own options:$bad"; fi
done
cat "$T"/*.opts | sort -u >"$T/all"
for c in $cmds; do
    other=""
    for o in $(comm -23 "$T/all" "$T/$c.opts"); do
        "$F" "$c" "--$o=1" "$T/none.toml" >/dev/null 2>"$T/err"
        grep -q "unrecognized option\|doesn't allow an argument" "$T/err" || other="$other $o"
    done
    if [ -z "$other" ]; then echo "PASS help: $c refuses the other commands' options"; else echo "FAIL help: $c accepts options it does not list:$other"; fi
done
# The other commands: --help from the table getopt is given (fmb_cli_help), every option
# listed is accepted.
for c in score generate inspect tokenize detokenize bench synth merge; do
    "$F" "$c" --help >"$T/$c.help" 2>&1
    rc=$?
    sed -n 's/^  --\([a-z-]*\).*/\1/p' "$T/$c.help" >"$T/$c.opts"
    if [ $rc -eq 0 ] && grep -q "^usage: fmbatch $c " "$T/$c.help" && grep -qx help "$T/$c.opts" &&
        [ "$(wc -l <"$T/$c.opts")" -ge 3 ]; then
        echo "PASS help: $c --help exits 0 with its options"
    else
        echo "FAIL help: $c --help: rc $rc: $(cat "$T/$c.help")"
    fi
    bad=""
    for o in $(cat "$T/$c.opts"); do
        [ "$o" = help ] && continue
        if grep -q "^  --$o [^ ]" "$T/$c.help"; then v="--$o=1"; else v="--$o"; fi
        "$F" "$c" "$v" >/dev/null 2>"$T/err" </dev/null
        grep -q "unrecognized option\|unknown or incomplete option" "$T/err" && bad="$bad $o"
    done
    if [ -z "$bad" ]; then echo "PASS help: every option $c lists is accepted"; else echo "FAIL help: $c refuses its own options:$bad"; fi
done
# `fmbatch --help` names exactly the commands above (each with its own --help), every
# description starting in one column
"$F" --help >"$T/top" 2>&1
rc=$?
listed=$(sed -n '/^commands:/,/^$/s/^  \([a-z]*\) .*/\1/p' "$T/top" | sort | tr '\n' ' ')
want=$(echo $cmds score generate inspect tokenize detokenize bench synth merge | tr ' ' '\n' | sort | tr '\n' ' ')
# characters 44 and 45 of a command's line: the padding's last space, the description's first letter
starts=$(sed -n '/^commands:/,/^$/{/^  [a-z]/p}' "$T/top" | cut -c44-45 | grep -vc '^ [^ ]$')
if [ $rc -eq 0 ] && [ "$listed" = "$want" ] && [ "$starts" = 0 ]; then
    echo "PASS help: fmbatch --help lists every command, descriptions in one column"
else
    echo "FAIL help: fmbatch --help: rc $rc, lists '$listed' (want '$want'), $starts lines not in the column: $(cat "$T/top")"
fi
exit 0
