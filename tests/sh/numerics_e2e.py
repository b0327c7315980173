"""Non-finite checkpoints and empty documents, end to end (run from the repository root).

A copy of tests/fixtures/tiny-a with NaN (or +Inf) in one tensor (tools/poison_safetensors.py):
`fmbatch run` fails every item with a reason naming non-finite values and exits 3, no result row
is written; `check` refuses the job naming the tensor, `inspect` lists it. An empty document
scores 0 tokens and its row lands (ppl NULL).
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
POISON = os.path.abspath("tools/poison_safetensors.py")
def run(args, **kw):
    return subprocess.run([FMBATCH] + args, capture_output=True, text=True, **kw)


TASKS = r'''
[[task]]
name = "ppl"
kind = "score"
per_token = true

[[task]]
name = "lang"
kind = "choice"
prompt = "{document}\n\nThe language of this text is"
choices = [" English", " German"]

[[task]]
name = "gen"
kind = "generate"
prompt = "{document}\nNext:"
max_new_tokens = 4
'''


def job(d, model, docs, tasks=TASKS, name="nf"):
    with open(os.path.join(d, "docs.jsonl"), "w") as f:
        for t in docs:
            f.write(json.dumps({"text": t}) + "\n")
    with open(os.path.join(d, "job.toml"), "w") as f:
        f.write('[job]\nname = "%s"\nmodel = "%s"\noutput = "out.db"\nthreads = 1\n'
                '[source]\nkind = "jsonl"\npaths = ["docs.jsonl"]\n%s' % (name, model, tasks))


def poisoned(d, tensor, value):
    dst = os.path.join(d, "model-" + value)
    subprocess.run([sys.executable, POISON, MODEL, dst, tensor, "--value", value, "--index", "3"],
                   check=True)
    return dst


def nonfinite_runs():
    for tensor, value in (("backbone.layers.1.mixer.out_proj.weight", "nan"),
                          ("backbone.layers.0.mixer.x_proj.weight", "inf"),
                          ("lm_head.weight", "nan")):
        d = tempfile.mkdtemp(prefix="fmb_nf_")
        try:
            model = poisoned(d, tensor, value)
            job(d, model, ["The quick brown fox.", "Der Hund schläft.", "Numbers 1 2 3."])
            r = run(["run", "job.toml", "--progress", "none"], cwd=d)
            db = sqlite3.connect(os.path.join(d, "out.db"))
            items = db.execute("SELECT key, status, coalesce(error, '') FROM item").fetchall()
            rows = db.execute("SELECT count(*) FROM result").fetchone()[0]
            db.close()
            what = "%s=%s" % (tensor.split(".")[-2], value)
            check(r.returncode == 3, "non-finite %s: run exits 3" % what,
                  "rc %d %s" % (r.returncode, r.stderr[-400:]))
            check(len(items) == 3 and all(s == "failed" and "non-finite" in e for _, s, e in items),
                  "non-finite %s: every item failed naming non-finite values" % what, repr(items))
            check(rows == 0, "non-finite %s: no result row" % what, "%d rows" % rows)
            c = run(["check", "job.toml"], cwd=d)
            listed = []
            try:
                listed = [t["tensor"] for t in json.loads(c.stdout)["nonfinite_weights"]]
            except (ValueError, KeyError):
                pass
            check(c.returncode == 2 and tensor in c.stderr and listed == [tensor],
                  "non-finite %s: check refuses, naming the tensor" % what,
                  "rc %d listed %r stderr %s" % (c.returncode, listed, c.stderr[-300:]))
            i = run(["inspect", "--model", model])
            got = json.loads(i.stdout)["nonfinite_weights"] if i.returncode == 0 else None
            check(got is not None and [t["tensor"] for t in got] == [tensor] and
                  got[0]["values"] == 1 and got[0]["first_index"] == 3 and tensor in i.stderr,
                  "non-finite %s: inspect lists the tensor" % what, "%r %s" % (got, i.stderr))
        finally:
            shutil.rmtree(d)
    i = run(["inspect", "--model", MODEL])
    check(i.returncode == 0 and json.loads(i.stdout)["nonfinite_weights"] == [] and not i.stderr,
          "inspect of a finite checkpoint lists nothing", i.stderr)


def each_task_kind():
    """Each task kind alone fails on a NaN checkpoint (the score task fails first above)."""
    kinds = TASKS.split("[[task]]")[1:]
    for t in kinds:
        kind = t.split('kind = "')[1].split('"')[0]
        d = tempfile.mkdtemp(prefix="fmb_nf_")
        try:
            model = poisoned(d, "backbone.layers.0.mixer.out_proj.weight", "nan")
            job(d, model, ["One document.", "Another one."], tasks="[[task]]" + t)
            r = run(["run", "job.toml", "--progress", "none"], cwd=d)
            db = sqlite3.connect(os.path.join(d, "out.db"))
            items = db.execute("SELECT status, coalesce(error, '') FROM item").fetchall()
            rows = db.execute("SELECT count(*) FROM result").fetchone()[0]
            db.close()
            check(r.returncode == 3 and rows == 0 and len(items) == 2 and
                  all(s == "failed" and "non-finite" in e for s, e in items),
                  "a %s task alone fails on a NaN checkpoint" % kind,
                  "rc %d rows %d %r" % (r.returncode, rows, items))
        finally:
            shutil.rmtree(d)


def empty_document():
    d = tempfile.mkdtemp(prefix="fmb_nf_")
    try:
        job(d, MODEL, ["", "Some text."], tasks='[[task]]\nname = "ppl"\nkind = "score"\n'
            'per_token = true\ntop_k_tokens = 2\n', name="empty")
        r = run(["run", "job.toml", "--progress", "none"], cwd=d)
        db = sqlite3.connect(os.path.join(d, "out.db"))
        row = db.execute("SELECT r.status, r.tokens, r.sum_nll, r.ppl, r.mean_nll, "
                         "length(r.token_nll) FROM result r JOIN item i USING (item_id) "
                         "WHERE i.key = 'docs.jsonl:1'").fetchone()
        done = db.execute("SELECT count(*) FROM item WHERE status = 'done'").fetchone()[0]
        db.close()
        check(r.returncode == 0 and done == 2 and row is not None and row[0] == "ok" and
              row[1] == 0 and row[2] == 0 and row[3] is None and row[4] is None,
              "an empty document scores 0 tokens, ppl NULL, and its row lands",
              "rc %d done %d row %r %s" % (r.returncode, done, row, r.stderr[-300:]))
    finally:
        shutil.rmtree(d)


nonfinite_runs()
each_task_kind()
empty_document()
sys.exit(1 if failures() else 0)
