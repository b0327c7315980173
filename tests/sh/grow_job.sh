#!/bin/sh
# Growing a job (issue 13): a task added to a job that already ran is run over the documents
# already done, the old tasks' rows are not rewritten, the new rows equal a fresh run's, and
# changing or removing an existing task is still refused with the difference. Prints PASS/FAIL
# lines for tests/run.sh.
set -u
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/docs"
for i in 1 2 3 4; do echo "document $i: a few words about item $i and more" >"$T/docs/d$i.txt"; done
head_job() { # $1 file, $2 output
    cat >"$1" <<EOF2
[job]
name = "grow"
model = "$PWD/tests/fixtures/tiny-a"
output = "$2"
[source]
kind = "files"
paths = ["docs"]
[[task]]
name = "ppl"
kind = "score"
[[task]]
name = "say"
kind = "generate"
prompt = "{document} Then"
max_new_tokens = 5
EOF2
}
choice_task() {
    cat >>"$1" <<'EOF2'
[[task]]
name = "pick"
kind = "choice"
prompt = "{document} Is it"
choices = [" yes", " no"]
EOF2
}
head_job "$T/a.toml" out.db
"$F" run "$T/a.toml" >/dev/null 2>&1
"$F" export "$T/a.toml" --format jsonl >"$T/e1.jsonl"
choice_task "$T/a.toml"
"$F" run "$T/a.toml" >/dev/null 2>"$T/grow.err"
rc_grow=$?
"$F" export "$T/a.toml" --format jsonl >"$T/e2.jsonl"
"$F" run "$T/a.toml" >/dev/null 2>"$T/again.err"
rc_again=$?
# a fresh job with all the tasks: the reference for the new rows
head_job "$T/b.toml" fresh.db
choice_task "$T/b.toml"
"$F" run "$T/b.toml" >/dev/null 2>&1
"$F" export "$T/b.toml" --format jsonl >"$T/e3.jsonl"
# changing an existing task, removing one: refused
sed 's/^max_new_tokens = 5$/max_new_tokens = 6/' "$T/a.toml" >"$T/c.toml"
"$F" run "$T/c.toml" >/dev/null 2>"$T/change.err"
rc_change=$?
head_job "$T/d.toml" out.db
"$F" run "$T/d.toml" >/dev/null 2>"$T/remove.err"
rc_remove=$?
python3 - "$T" "$rc_grow" "$rc_again" "$rc_change" "$rc_remove" <<'PY'
import json, sys
T = sys.argv[1]
rc_grow, rc_again, rc_change, rc_remove = map(int, sys.argv[2:6])
def check(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + "grow job: " + what + ("" if ok else ": " + detail))
def rows(name):
    return [json.loads(l) for l in open(T + "/" + name)]
e1, e2, e3 = rows("e1.jsonl"), rows("e2.jsonl"), rows("e3.jsonl")
grow = open(T + "/grow.err").read()
check(rc_grow == 0 and "4 done documents are queued again" in grow,
      "the added task is accepted and the done documents queued again", grow[-300:])
old = {r["item_key"]: r for r in e1}
old = {(r["item_key"], r["task"]): r for r in e1}
kept = {(r["item_key"], r["task"]): r for r in e2 if r["task"] in ("ppl", "say")}
check(len(old) == 8 and kept == old, "the old tasks' rows are untouched (timings included)",
      repr([k for k in old if kept.get(k) != old[k]]))
check("decode 0 tokens" in grow, "the old generate task is not run again (no decode step)",
      [l for l in grow.split("\n") if "engine:" in l].__repr__())
TIMING = {"job", "item_id", "prefill_seconds", "task_seconds", "finished_at"}
strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}
new = sorted((strip(r) for r in e2 if r["task"] == "pick"), key=lambda r: r["item_key"])
ref = sorted((strip(r) for r in e3 if r["task"] == "pick"), key=lambda r: r["item_key"])
check(len(new) == 4 and new == ref, "the new task's rows equal a fresh run's",
      "%d rows" % len(new))
check(rc_again == 0 and "queued again" not in open(T + "/again.err").read(),
      "a rerun does nothing more")
ch = open(T + "/change.err").read()
check(rc_change == 2 and "max_new_tokens" in ch, "changing a task is refused with the difference",
      "rc %d: %s" % (rc_change, ch[-300:]))
rm = open(T + "/remove.err").read()
check(rc_remove == 2 and "task.pick" in rm, "removing a task is refused with the difference",
      "rc %d: %s" % (rc_remove, rm[-300:]))
PY
