"""Issue 13's generation controls, end to end on the demo model (run from the repository root,
FMBATCH = the binary; prints PASS/FAIL lines).

  - a generate task with repetition/presence/frequency penalties, min_p, n = 3 and logprobs = 3:
    every sample of every row equals `fmbatch generate --document-file ... --n 3` with the row's
    seed (ids, text, finish_reason, top logprobs), sample 0 fills the row's columns and its
    token_topk_* arrays, the samples differ, and extract runs on each;
  - greedy with presence/frequency penalties: each pick is the argmax of the penalised raw
    log-probabilities (from logprobs = 20), computed here from the row's own history;
  - choice best_by: "sum" picks the largest total, "bytes" the largest total per byte (lm-eval
    acc_norm), from the choices JSON; "bytes" is the candidate's UTF-8 length;
  - `fmbatch score --per-token`: ids = `fmbatch tokenize`, offsets = a job row's token_offset;
  - out-of-range values: exit 2 at `fmbatch check`, naming file:line and the key.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("jobs/demo/model")
def run(args, **kw):
    return subprocess.run([FMBATCH] + args, capture_output=True, text=True, **kw)


DOCS = [
    "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "Title: Notes on packaging\n\nA package is a file that holds a program and its data.",
    "def main():\n    print('hello')\n    print('hello')\n",
    "Der Hund lief schnell über die Straße und bellte laut.",
]

PROMPT = "{document}\n\nQuestion: What is this about?\nAnswer:"
JOB = r'''[job]
name = "gen13"
model = "%s"
output = "out.db"
seed = 5
threads = 1

[source]
kind = "jsonl"
paths = ["docs.jsonl"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"
per_token = true

[[task]]
name = "samples"
kind = "generate"
prompt = "%s"
max_new_tokens = 10
temperature = 0.9
top_k = 50
min_p = 0.05
repetition_penalty = 1.3
presence_penalty = 0.5
frequency_penalty = 0.3
n = 3
logprobs = 3
extract = { first = '^\s*(?<word>\S+)' }

[[task]]
name = "greedy"
kind = "generate"
prompt = "%s"
max_new_tokens = 12
ignore_eos = true
presence_penalty = 0.7
frequency_penalty = 0.9
logprobs = 20

[[task]]
name = "bysum"
kind = "choice"
prompt = "{document}\n\nThis text is"
choices = [" English prose about animals", " code", " German", " x"]
best_by = "sum"

[[task]]
name = "bybytes"
kind = "choice"
prompt = "{document}\n\nThis text is"
choices = [" English prose about animals", " code", " German", " x"]
best_by = "bytes"
'''


def esc(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def main():
    d = tempfile.mkdtemp(prefix="fmb_gen13_")
    try:
        with open(os.path.join(d, "docs.jsonl"), "w") as f:
            for i, t in enumerate(DOCS):
                f.write(json.dumps({"id": "d%d" % i, "text": t}) + "\n")
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(JOB % (MODEL, esc(PROMPT), esc(PROMPT)))
        r = run(["run", "job.toml", "--progress", "none"], cwd=d)
        check(r.returncode == 0, "the job runs", r.stderr[-500:])
        ex = run(["export", "job.toml", "--format", "jsonl"], cwd=d)
        rows = {}
        for line in ex.stdout.splitlines():
            o = json.loads(line)
            rows[(o["item_key"], o["task"])] = o
        check(len(rows) == 5 * len(DOCS), "every row is there", "%d rows" % len(rows))
        ok, why, differ = True, "", 0
        for i, text in enumerate(DOCS):
            key = "docs.jsonl#d%d" % i
            row = rows[(key, "samples")]
            fn = os.path.join(d, "doc%d.txt" % i)
            with open(fn, "w") as f:
                f.write(text)
            g = run(["generate", "--model", MODEL, "--document-file", fn, "--prompt", PROMPT,
                     "--max-new-tokens", "10", "--temperature", "0.9", "--top-k", "50",
                     "--min-p", "0.05", "--repetition-penalty", "1.3", "--presence-penalty",
                     "0.5", "--frequency-penalty", "0.3", "--n", "3", "--logprobs", "3",
                     "--seed", str(row["seed"]), "--threads", "1"])
            cli = [json.loads(x) for x in g.stdout.splitlines()]
            samples = row["choices"]
            if g.returncode or len(cli) != 3 or not isinstance(samples, list) or len(samples) != 3:
                ok, why = False, "%s: rc %d, %d lines, samples %r" % (key, g.returncode, len(cli),
                                                                      samples)
                continue
            for j in range(3):
                c, s = cli[j], samples[j]
                if c["index"] != j or s["index"] != j or c["ids"] != s["ids"] or \
                        c["text"] != s["text"] or c["finish_reason"] != s["finish_reason"] or \
                        [[t[0] for t in p] for p in c["top_logprobs"]] != \
                        [[t[0] for t in p] for p in s["top_logprobs"]]:
                    ok, why = False, "%s sample %d: cli %r vs row %r" % (key, j, c, s)
                if any(abs(a - b) > 1e-5 for a, b in zip(c["logprobs"], s["logprobs"])):
                    ok, why = False, "%s sample %d logprobs differ" % (key, j)
            s0 = samples[0]
            flat = [t[0] for p in s0["top_logprobs"] for t in p]
            if row["ids"] != s0["ids"] or row["text"] != s0["text"] or \
                    row["tokens"] != len(s0["ids"]) or row["token_topk_ids"] != flat or \
                    len(row["token_topk_logprobs"]) != 3 * len(s0["ids"]):
                ok, why = False, "%s: the row's columns are not sample 0" % key
            for s in samples:
                w = s["text"].split()
                want = w[0] if w else None
                if (s.get("extract") or {}).get("word") != want:
                    ok, why = False, "%s: extract %r of %r" % (key, s.get("extract"), s["text"])
            differ += len({tuple(s["ids"]) for s in samples}) > 1
            sm = row["sampling"]
            if sm.get("n") != 3 or sm.get("min_p") != 0.05 or sm.get("repetition_penalty") != 1.3:
                ok, why = False, "%s: sampling %r" % (key, sm)
        check(ok, "n = 3 samples with penalties, min_p, logprobs: rows = fmbatch generate", why)
        check(differ >= 3, "the samples of a row differ (own streams)", "%d of 4" % differ)
        # greedy with presence/frequency: argmax of penalised raw logprobs over the top 20
        ok, why, decided = True, "", 0
        for i in range(len(DOCS)):
            row = rows[("docs.jsonl#d%d" % i, "greedy")]
            ids, ti, tl = row["ids"], row["token_topk_ids"], row["token_topk_logprobs"]
            counts = {}
            for t, pick in enumerate(ids):
                cand = [(tl[t * 20 + k] - 0.9 * counts.get(ti[t * 20 + k], 0) -
                         (0.7 if counts.get(ti[t * 20 + k]) else 0), -ti[t * 20 + k])
                        for k in range(20)]
                best = max(cand)
                # decidable when the winner beats every id outside the top 20
                if best[0] > tl[t * 20 + 19] + 1e-4:
                    decided += 1
                    if -best[1] != pick:
                        ok, why = False, "doc %d step %d: picked %d, penalised argmax %d" % (
                            i, t, pick, -best[1])
                counts[pick] = counts.get(pick, 0) + 1
        check(ok and decided > 20, "greedy with presence/frequency penalties = their argmax",
              why or "%d decided steps" % decided)
        # best_by
        ok, why = True, ""
        for i in range(len(DOCS)):
            for task, keyf in (("bysum", lambda c: c["total"]),
                               ("bybytes", lambda c: c["total"] / len(c["text"].encode()))):
                row = rows[("docs.jsonl#d%d" % i, task)]
                ch = row["choices"]
                want = max(range(len(ch)), key=lambda k: (keyf(ch[k]), -k))
                if row["best_index"] != want or any(c["bytes"] != len(c["text"].encode())
                                                    for c in ch):
                    ok, why = False, "%s doc %d: best %r, want %d: %r" % (task, i,
                                                                          row["best_index"], want,
                                                                          ch)
        check(ok, "choice best_by sum and bytes pick by total and total per byte", why)
        sums = [rows[("docs.jsonl#d%d" % i, "bysum")]["best_index"] for i in range(len(DOCS))]
        byb = [rows[("docs.jsonl#d%d" % i, "bybytes")]["best_index"] for i in range(len(DOCS))]
        check(sums != byb, "best_by bytes changes the pick on this corpus", "%r %r" % (sums, byb))
        # score --per-token: ids and offsets
        ok, why = True, ""
        for i, text in enumerate(DOCS):
            fn = os.path.join(d, "doc%d.txt" % i)
            sc = json.loads(run(["score", "--model", MODEL, "--text-file", fn, "--per-token",
                                 "--threads", "1"]).stdout)
            # a document: special tokens are plain text, as in a job
            tk = run(["tokenize", "--model", MODEL, "--no-special", fn])
            row = rows[("docs.jsonl#d%d" % i, "ppl")]
            tids = json.loads(tk.stdout) if tk.returncode == 0 else None
            if sc["ids"] != tids or sc["offsets"] != row["token_offset"] or \
                    len(sc["ids"]) != len(sc["nll"]):
                ok, why = False, "doc %d: ids %r vs tokenize %r, offsets %r vs row %r" % (
                    i, sc["ids"][:8], (tids or [])[:8], sc["offsets"][:8],
                    row["token_offset"][:8])
        check(ok, "score --per-token prints the scored ids and the row's byte offsets", why)
        # validation at check time
        base = JOB % (MODEL, esc(PROMPT), esc(PROMPT))
        bad = [("repetition_penalty = 1.3", "repetition_penalty = 0"),
               ("repetition_penalty = 1.3", "repetition_penalty = -1.5"),
               ("min_p = 0.05", "min_p = 1.5"), ("min_p = 0.05", "min_p = -0.1"),
               ("n = 3", "n = 0"), ("n = 3", "n = 1000"), ("logprobs = 3", "logprobs = 21"),
               ("presence_penalty = 0.5", "presence_penalty = 3"),
               ("frequency_penalty = 0.3", "frequency_penalty = -2.5"),
               ('best_by = "sum"', 'best_by = "chars"')]
        ok, why = True, ""
        for old, new in bad:
            txt = base.replace(old, new, 1)
            line = txt[:txt.index(new)].count("\n") + 1
            with open(os.path.join(d, "bad.toml"), "w") as f:
                f.write(txt)
            r = run(["check", "bad.toml"], cwd=d)
            keyname = new.split(" =")[0]
            if r.returncode != 2 or ("bad.toml:%d:" % line) not in r.stderr or \
                    keyname not in r.stderr:
                ok, why = False, "%s: rc %d: %s" % (new, r.returncode, r.stderr.strip()[-300:])
        check(ok, "out-of-range controls: exit 2 at check, file:line and the key", why)
        for args, what in ((["--repetition-penalty", "0"], "repetition"),
                           (["--min-p", "2"], "min-p"), (["--n", "0"], "n"),
                           (["--logprobs", "21"], "logprobs")):
            r = run(["generate", "--model", MODEL, "--prompt", "x"] + args)
            check(r.returncode == 2 and what in r.stderr,
                  "generate %s: exit 2 naming the option" % " ".join(args),
                  "rc %d %s" % (r.returncode, r.stderr))
    finally:
        shutil.rmtree(d)
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
