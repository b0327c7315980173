"""End-to-end tests of the batch layer (run from the repository root, FMBATCH = the binary).

Prints PASS/FAIL lines for tests/run.sh. Every case builds its inputs in a temporary folder.
"""
import gzip
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
def run(args, **kw):
    return subprocess.run([FMBATCH] + args, capture_output=True, text=True, **kw)


DOCS = {
    "a.txt": "The quick brown fox jumps over the lazy dog. Title: Foxes\n",
    "b.md": "# Report\n\nSales went up by 12% in March; the board was pleased.",
    "c.txt": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "sub/d.txt": "Short.",
    "sub/e.txt": "Numbers 1 2 3 4 5 6 7 8 9 10 and <|endoftext|> stays text here.",
}

TASKS = r'''
[[task]]
name = "ppl"
kind = "score"
per_token = true
top_k_tokens = 2

[[task]]
name = "lang"
kind = "choice"
prompt = "{document}\n\nThe language of this text is"
choices = [" English", " German", " French"]

[[task]]
name = "title"
kind = "generate"
prompt = "{document}\n\nQuestion: What is the title?\nAnswer:"
max_new_tokens = 12
temperature = 0.9
top_k = 40
top_p = 0.95
stop = ["\n"]
extract = { title = '^\s*(?<title>.+?)\s*$' }

[[task]]
name = "greedy"
kind = "generate"
prompt = "Summary of: {document}\nIn short:"
max_new_tokens = 6
'''


def job_text(name, source, extra_job="", tasks=TASKS):
    return """[job]
name = "%s"
model = "%s"
output = "out.db"
seed = 1234
threads = 1
%s
%s
%s""" % (name, MODEL, extra_job, source, tasks)


def export(d, job="job.toml"):
    # --keep-special: the text as stored, as `fmbatch generate` prints it
    r = run(["export", job, "--format", "jsonl", "--keep-special"], cwd=d)
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    return r.returncode, rows


def rows_key(rows, drop=("finished_at", "prefill_seconds", "task_seconds", "item_id")):
    out = {}
    for r in rows:
        k = (r["item_key"], r["task"])
        out[k] = {c: v for c, v in r.items() if c not in drop}
    return out


def close(a, b, tol=1e-5):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def write_docs(root, docs):
    for name, text in docs.items():
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)


def compare_with_cli(d, rows, texts, name):
    """Each row equals the single-document commands on the same text."""
    ok, why = True, ""
    by = rows_key(rows)
    for key, text in texts.items():
        fn = os.path.join(d, "one.txt")
        with open(fn, "w") as f:
            f.write(text)
        sc = json.loads(run(["score", "--model", MODEL, "--text-file", fn, "--threads", "1"]).stdout)
        r = by.get((key, "ppl"))
        if not r:
            return False, "no ppl row for %s" % key
        for f in ("sum_nll", "mean_nll", "ppl", "bits_per_byte"):
            if not close(r[f], sc[f]):
                ok, why = False, "%s %s: run %r vs score %r" % (key, f, r[f], sc[f])
        if r["tokens"] != sc["tokens"]:
            ok, why = False, "%s tokens %r vs %r" % (key, r["tokens"], sc["tokens"])
        if len(r["token_nll"]) != sc["tokens"] or len(r["token_offset"]) != sc["tokens"]:
            ok, why = False, "%s per-token arrays have the wrong length" % key
        for task in ("title", "greedy"):
            g = by[(key, task)]
            s = g["sampling"]
            args = ["generate", "--model", MODEL, "--document-file", fn, "--prompt",
                    [t for t in TASKS.split("[[task]]") if '"%s"' % task in t][0]
                    .split('prompt = "')[1].split('"\n')[0].encode().decode("unicode_escape"),
                    "--max-new-tokens", str(s["max_new_tokens"]), "--seed", str(g["seed"]),
                    "--threads", "1"]
            if s["temperature"] > 0:
                args += ["--temperature", repr(s["temperature"]), "--top-k", str(s["top_k"]),
                         "--top-p", repr(s["top_p"])]
            for st in s["stop"]:
                args += ["--stop", st]
            gen = run(args)
            gj = json.loads(gen.stdout)
            if gj["ids"] != g["ids"] or gj["text"] != g["text"] or \
                    gj["finish_reason"] != g["finish_reason"]:
                ok, why = False, "%s %s: run %r/%r vs generate %r/%r" % (
                    key, task, g["ids"], g["text"], gj["ids"], gj["text"])
            if not all(close(a, b) for a, b in zip(gj["logprobs"], g["logprobs"])):
                ok, why = False, "%s %s logprobs differ" % (key, task)
        ch = by[(key, "lang")]
        if ch["best"] not in (" English", " German", " French") or len(ch["choices"]) != 3:
            ok, why = False, "%s choice row malformed: %r" % (key, ch)
        ex = by[(key, "title")]["extract"]
        if not isinstance(ex, dict) or "ok" not in ex or "title" not in ex:
            ok, why = False, "%s extract malformed: %r" % (key, ex)
    check(ok, name, why)


def source_case(kind, make):
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        source, texts = make(d)
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("e2e-" + kind, source))
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 0, "run %s exits 0" % kind, r.stderr[-2000:])
        st = json.loads(run(["status", "job.toml"], cwd=d).stdout)
        check(st["done"] == len(texts) and st["failed"] == 0 and st["pending"] == 0,
              "status %s counts" % kind, repr(st))
        rc, rows = export(d)
        check(rc == 0 and len(rows) == 4 * len(texts), "export %s rows" % kind,
              "%d rows for %d docs" % (len(rows), len(texts)))
        keys = sorted(set(r["item_key"] for r in rows))
        check(keys == sorted(texts), "item keys %s" % kind, "%r vs %r" % (keys, sorted(texts)))
        compare_with_cli(d, rows, texts, "results %s equal score/generate one by one" % kind)
        csv = run(["export", "job.toml", "--format", "csv"], cwd=d)
        check(csv.returncode == 0 and len(csv.stdout.splitlines()) >= 1 + 4 * len(texts),
              "export %s csv" % kind, csv.stderr)
        # A rerun of a finished job does nothing and keeps the rows.
        r2 = run(["run", "job.toml"], cwd=d)
        rc, rows2 = export(d)
        check(r2.returncode == 0 and rows_key(rows2) == rows_key(rows), "rerun %s is a no-op" % kind,
              r2.stderr[-500:])
    finally:
        shutil.rmtree(d)


def make_targz(d):
    buf = os.path.join(d, "corpus.tar.gz")
    with tarfile.open(buf, "w:gz") as t:
        for name, text in DOCS.items():
            data = text.encode()
            ti = tarfile.TarInfo("docs/" + name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        # not included (a link that is included is a failed item: tests/sh/bad_inputs.sh)
        ti = tarfile.TarInfo("docs/link")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "a.txt"
        t.addfile(ti)
        ti = tarfile.TarInfo("docs/skip.bin")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"xyz"))
    src = '[source]\nkind = "archive"\npaths = ["corpus.*"]\ninclude = ["*.txt", "*.md"]\n'
    return src, {"corpus.tar.gz!docs/" + n: t for n, t in DOCS.items()}


def make_zip(d):
    os.makedirs(os.path.join(d, "in"))
    with zipfile.ZipFile(os.path.join(d, "in", "c.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in DOCS.items():
            z.writestr(name, text)
    return '[source]\nkind = "archive"\npaths = "in/*.zip"\n', \
        {"in/c.zip!" + n: t for n, t in DOCS.items()}


def make_jsonl(d):
    with gzip.open(os.path.join(d, "data.jsonl.gz"), "wt") as f:
        for i, (name, text) in enumerate(DOCS.items()):
            f.write(json.dumps({"id": "doc%d" % i, "body": text, "meta": {"n": name}}) + "\n")
            if i == 1:
                f.write("\n")
    return ('[source]\nkind = "jsonl"\npaths = ["data.jsonl.gz"]\ntext_field = "body"\n'
            'id_field = "id"\n',
            {"data.jsonl.gz#doc%d" % i: t for i, t in enumerate(DOCS.values())})


def make_dir(d):
    write_docs(os.path.join(d, "tree"), DOCS)
    return '[source]\nkind = "files"\npaths = ["tree"]\nexclude = ["*.md"]\n', \
        {"tree/" + n: t for n, t in DOCS.items() if not n.endswith(".md")}


def make_sqlite(d):
    db = sqlite3.connect(os.path.join(d, "src.db"))
    db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)")
    for i, text in enumerate(DOCS.values()):
        db.execute("INSERT INTO docs VALUES (?, ?)", (i * 10 + 1, text))
    db.commit()
    db.close()
    return ('[source]\nkind = "sqlite"\ndatabase = "src.db"\nquery = "SELECT id, body FROM docs"\n'
            'page_rows = 2\n', {str(i * 10 + 1): t for i, t in enumerate(DOCS.values())})


def failing_items():
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        # A corrupt zip entry (bad CRC), an entry over max_entry_bytes, a bad JSONL line and a
        # regex that hits its match limit, each recorded with its reason; the run goes on.
        good = "A fine document about cats."
        with zipfile.ZipFile(os.path.join(d, "z.zip"), "w", zipfile.ZIP_STORED) as z:
            z.writestr("good.txt", good)
            z.writestr("bad.txt", "this entry will be corrupted on disk")
            z.writestr("big.txt", "x" * 5000)
        raw = bytearray(open(os.path.join(d, "z.zip"), "rb").read())
        i = raw.find(b"this entry will be corrupted")
        raw[i + 5] ^= 0x55
        open(os.path.join(d, "z.zip"), "wb").write(raw)
        src = ('[source]\nkind = "archive"\npaths = ["z.zip"]\nmax_entry_bytes = 1000\n')
        tasks = '[[task]]\nname = "ppl"\nkind = "score"\n'
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("fail-archive", src, tasks=tasks))
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 3, "failed items: exit 3 (archive)", "rc %d %s" % (r.returncode, r.stderr))
        db = sqlite3.connect(os.path.join(d, "out.db"))
        st = dict(db.execute("SELECT key, status || ': ' || coalesce(error, '') FROM item"))
        check(st.get("z.zip!good.txt", "").startswith("done"), "good entry done next to bad ones", repr(st))
        check("corrupt" in st.get("z.zip!bad.txt", "") or "CRC" in st.get("z.zip!bad.txt", ""),
              "corrupt entry recorded", repr(st))
        check("max_entry_bytes" in st.get("z.zip!big.txt", ""), "entry over limit recorded", repr(st))
        stj = json.loads(run(["status", "job.toml"], cwd=d).stdout)
        check(stj["failed"] == 2 and len(stj["failures"]) >= 1, "status groups failures", repr(stj))
        db.close()
        # JSONL with a bad line and a regex with catastrophic backtracking + tiny match limit.
        with open(os.path.join(d, "x.jsonl"), "w") as f:
            f.write(json.dumps({"text": "first good line"}) + "\n")
            f.write('{"text": "broken\n')
            f.write(json.dumps({"nottext": 1}) + "\n")
            f.write(json.dumps({"text": "fourth good line"}) + "\n")
        tasks = r'''[[task]]
name = "g"
kind = "generate"
prompt = "{document} =>"
max_new_tokens = 24
ignore_eos = true
match_limit = 20
extract = { x = '^(?<x>(?:.|\s)*(?:.|\s)*\d{9}\b)' }
'''
        src = '[source]\nkind = "jsonl"\npaths = ["x.jsonl"]\n'
        with open(os.path.join(d, "job2.toml"), "w") as f:
            f.write(job_text("fail-jsonl", src, tasks=tasks).replace('"out.db"', '"out2.db"'))
        r = run(["run", "job2.toml"], cwd=d)
        check(r.returncode == 3, "failed items: exit 3 (jsonl, regex)", "rc %d %s" % (r.returncode, r.stderr))
        db = sqlite3.connect(os.path.join(d, "out2.db"))
        st = dict(db.execute("SELECT key, status || ': ' || coalesce(error, '') FROM item"))
        check("bad JSON" in st.get("x.jsonl:2", ""), "bad JSONL line recorded", repr(st))
        check("text field" in st.get("x.jsonl:3", ""), "JSONL line without text recorded", repr(st))
        check("limit" in st.get("x.jsonl:1", "") and "limit" in st.get("x.jsonl:4", ""),
              "regex match limit recorded", repr(st))
        db.close()
        # retry --failed puts them back; the source failures fail again, the run still exits 3
        rr = run(["retry", "job2.toml", "--failed"], cwd=d)
        check(rr.returncode == 0 and json.loads(rr.stdout)["retried"] == 4, "retry --failed",
              rr.stdout + rr.stderr)
    finally:
        shutil.rmtree(d)


def many_docs(d, n):
    os.makedirs(os.path.join(d, "many"), exist_ok=True)
    texts = {}
    for i in range(n):
        t = ("Document %d. " % i) + ("word%d " % (i * 7 % 13)) * (20 + i % 17)
        with open(os.path.join(d, "many", "doc%03d.txt" % i), "w") as f:
            f.write(t)
        texts["many/doc%03d.txt" % i] = t
    return texts


RESUME_TASKS = r'''
[[task]]
name = "ppl"
kind = "score"

[[task]]
name = "gen"
kind = "generate"
prompt = "{document}\nNext:"
max_new_tokens = 24
temperature = 1.0
top_k = 50
ignore_eos = true
'''


def resume_and_concurrency():
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        many_docs(d, 100)
        src = '[source]\nkind = "files"\npaths = ["many"]\n'
        for name, out in (("ref.toml", "ref.db"), ("job.toml", "out.db"), ("two.toml", "two.db")):
            with open(os.path.join(d, name), "w") as f:
                f.write(job_text("resume", src, tasks=RESUME_TASKS).replace('"out.db"', '"%s"' % out))
        r = run(["run", "ref.toml"], cwd=d)
        _, ref = export(d, "ref.toml")
        check(r.returncode == 0 and len(ref) == 200, "uninterrupted reference run", r.stderr[-500:])
        # kill -9 at several points, then a final rerun
        kills = 0
        for delay in (0.03, 0.08, 0.15, 0.25):
            p = subprocess.Popen([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if p.poll() is None:
                p.kill()
                kills += 1
            p.wait()
        r = run(["run", "job.toml"], cwd=d)
        _, got = export(d)
        db = sqlite3.connect(os.path.join(d, "out.db"))
        dup = db.execute("SELECT count(*) - count(DISTINCT item_key || '/' || task) FROM result").fetchone()[0]
        db.close()
        check(r.returncode == 0 and rows_key(got, drop=("finished_at", "prefill_seconds",
                                                        "task_seconds", "item_id")) ==
              rows_key(ref), "kill -9 x%d then rerun equals an uninterrupted run" % kills,
              "rc %d, %d rows vs %d" % (r.returncode, len(got), len(ref)))
        check(dup == 0 and len(got) == 200, "no duplicate and no missing row after kills", "dup %d" % dup)
        # SIGINT: releases the current item (no attempt counted), exit 130
        os.remove(os.path.join(d, "out.db"))
        p = subprocess.Popen([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate()
        db = sqlite3.connect(os.path.join(d, "out.db"))
        running = db.execute("SELECT count(*) FROM item WHERE status = 'running'").fetchone()[0]
        pend_att = db.execute("SELECT coalesce(max(attempts), 0) FROM item WHERE status = 'pending'").fetchone()[0]
        db.close()
        check(p.returncode in (130, 0) and running == 0 and pend_att == 0,
              "SIGINT releases the item and exits 130", "rc %d running %d attempts %d" % (p.returncode, running, pend_att))
        r = run(["run", "job.toml"], cwd=d)
        _, got = export(d)
        check(r.returncode == 0 and rows_key(got) == rows_key(ref), "rerun after SIGINT completes", r.stderr[-300:])
        # two runs started together share the queue and do each item exactly once
        ps = [subprocess.Popen([FMBATCH, "run", "two.toml", "--progress", "none"], cwd=d,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        rcs = [p.wait() for p in ps]
        db = sqlite3.connect(os.path.join(d, "two.db"))
        owners = db.execute("SELECT count(*), max(attempts), count(DISTINCT worker) FROM item WHERE status='done'").fetchone()
        db.close()
        _, two = export(d, "two.toml")
        check(rcs == [0, 0] and owners[0] == 100 and owners[1] == 1 and owners[2] == 2 and rows_key(two) == rows_key(ref),
              "two concurrent runs do every item exactly once", "rcs %r, %r" % (rcs, owners))
    finally:
        shutil.rmtree(d)


def fingerprint_and_changes():
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        texts = many_docs(d, 6)
        src = '[source]\nkind = "files"\npaths = ["many"]\n'
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("fp", src, tasks=RESUME_TASKS))
        r = run(["run", "job.toml"], cwd=d)
        _, before = export(d)
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("fp", src, tasks=RESUME_TASKS.replace("max_new_tokens = 24", "max_new_tokens = 25")))
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 2 and "max_new_tokens = 24" in r.stderr and "max_new_tokens = 25" in r.stderr,
              "edited task settings are refused with the difference", "rc %d: %s" % (r.returncode, r.stderr))
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("fp", src, tasks=RESUME_TASKS))
        with open(os.path.join(d, "many", "doc002.txt"), "a") as f:
            f.write(" changed!")
        r = run(["run", "job.toml"], cwd=d)
        _, after = export(d)
        b, a = rows_key(before, drop=("item_id",)), rows_key(after, drop=("item_id",))
        changed = sorted(set(k[0] for k in a if a[k] != b.get(k)))
        check(r.returncode == 0 and changed == ["many/doc002.txt"], "a changed document alone is redone",
              repr(changed))
        # a job file error names file:line:column
        with open(os.path.join(d, "bad.toml"), "w") as f:
            f.write(job_text("fp", src, tasks=RESUME_TASKS.replace("top_k = 50", "top_kk = 50")))
        r = run(["run", "bad.toml"], cwd=d)
        check(r.returncode == 2 and "bad.toml:" in r.stderr and "top_kk" in r.stderr,
              "unknown key is a config error with its position", r.stderr)
        c = run(["check", "job.toml"], cwd=d)
        cj = json.loads(c.stdout) if c.returncode == 0 else {}
        check(c.returncode == 0 and cj.get("items") == 6 and cj.get("bytes", 0) > 0,
              "check counts items and bytes", c.stdout + c.stderr)
        want_k = "n/a (cpu backend)" if cj.get("backend") == "cpu" else "scan=auto,"
        check(str(cj.get("kernels", "")).startswith(want_k), "check reports the kernel choices",
              c.stdout + c.stderr)
        # kernel choices that change numbers are part of the fingerprint; launch-only ones not
        for how, args, env in (("--kernel", ["--kernel", "scan=seg"], {}),
                               ("FMB_SCAN", [], {"FMB_SCAN": "seg"})):
            r = run(["run", "job.toml"] + args, cwd=d, env=dict(os.environ, **env))
            check(r.returncode == 2 and 'job.kernel = "scan=seg"' in r.stderr,
                  "a numeric kernel choice (%s) is refused on resume" % how,
                  "rc %d: %s" % (r.returncode, r.stderr))
        r = run(["run", "job.toml", "--kernel", "pdl=off,graphs=off,debug-sync=on"], cwd=d)
        check(r.returncode == 0, "launch-only kernel choices resume", "rc %d: %s" % (r.returncode, r.stderr))
        with open(os.path.join(d, "k.toml"), "w") as f:
            f.write(job_text("fp", src, extra_job='kernel = "gemm=cublas"', tasks=RESUME_TASKS))
        r = run(["run", "k.toml"], cwd=d)
        check(r.returncode == 2 and 'job.kernel = "gemm=cublas"' in r.stderr,
              "[job].kernel is part of the fingerprint", "rc %d: %s" % (r.returncode, r.stderr))
    finally:
        shutil.rmtree(d)


def token_limit():
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        write_docs(os.path.join(d, "t"), {"long.txt": "word " * 200, "short.txt": "hi"})
        src = '[source]\nkind = "files"\npaths = ["t"]\n'
        tasks = '[[task]]\nname = "ppl"\nkind = "score"\n'
        for mode in ("truncate", "skip"):
            with open(os.path.join(d, "job.toml"), "w") as f:
                f.write(job_text("lim-" + mode, src, 'max_document_tokens = 16\ntoo_long = "%s"' % mode,
                                 tasks=tasks))
            r = run(["run", "job.toml"], cwd=d)
            by = rows_key(export(d)[1])
            lg, sh = by.get(("t/long.txt", "ppl"), {}), by.get(("t/short.txt", "ppl"), {})
            if mode == "truncate":
                ok = lg.get("truncated") == 1 and lg.get("tokens") == 16 and "truncated" in (lg.get("note") or "")
            else:
                ok = lg.get("status") == "skipped" and lg.get("tokens") is None and "skipped" in (lg.get("note") or "")
            check(r.returncode == 0 and ok and sh.get("truncated") == 0 and sh.get("status") == "ok",
                  "max_document_tokens: %s, said in the row" % mode, repr(lg))
            os.remove(os.path.join(d, "out.db"))
    finally:
        shutil.rmtree(d)


def unescape_key(s):
    r"""Undoes export's escape of text that is not valid UTF-8 (docs/DECISIONS.md): "\\" is a
    backslash, "\xHH" a raw byte, everything else UTF-8."""
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1] == "\\":
            out += b"\\"
            i += 2
        elif s[i] == "\\" and s[i + 1] == "x":
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            out += s[i].encode()
            i += 1
    return bytes(out)


def export_cases():
    """export --include-failed (JSONL and CSV), keys that are not UTF-8, status on a corrupt
    output file, and the output folder (created when missing; a read-only one named)."""
    import csv as csvmod
    d = tempfile.mkdtemp(prefix="fmb_e2e_")
    try:
        tree = os.path.join(d, "tree").encode()
        os.makedirs(tree)
        bad_name = b"bad\xff\\x\xc3(.txt"  # an invalid byte, a backslash, a cut sequence
        files = {b"good.txt": b"A fine document about cats.", bad_name: b"Some text about dogs.",
                 b"big.txt": b"x" * 3000}
        for n, data in files.items():
            with open(os.path.join(tree, n), "wb") as f:
                f.write(data)
        src = '[source]\nkind = "files"\npaths = ["tree"]\nmax_entry_bytes = 1000\n'
        tasks = ('[[task]]\nname = "ppl"\nkind = "score"\n\n[[task]]\nname = "g"\n'
                 'kind = "generate"\nprompt = "{document} =>"\nmax_new_tokens = 4\n')
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write(job_text("exp", src, tasks=tasks))
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 3, "export cases: run exits 3 (one failed item)", r.stderr[-800:])
        raw_key = b"tree/" + bad_name
        db = sqlite3.connect(os.path.join(d, "out.db"))
        db.text_factory = bytes
        items = {k: (st, err) for k, st, err in db.execute("SELECT key, status, error FROM item")}
        db.close()
        check(raw_key in items and items[raw_key][0] == b"done", "invalid UTF-8 key stored raw",
              repr(items))
        cols = ["job", "item_key", "doc_id", "task", "item_id", "kind", "status", "note", "doc_tokens",
                "truncated", "prompt_tokens", "tokens", "sum_nll", "mean_nll", "ppl",
                "bits_per_byte", "token_nll", "token_rank", "token_offset", "token_topk_ids",
                "token_topk_logprobs", "choices", "best", "best_index", "text", "ids", "logprobs",
                "finish_reason", "extract", "seed", "sampling", "model", "model_hash",
                "tokenizer_hash", "fmbatch_version", "prefill_seconds", "task_seconds",
                "finished_at", "meta"]
        # JSONL, with and without the failed items
        plain = run(["export", "job.toml"], cwd=d)
        full = run(["export", "job.toml", "--include-failed"], cwd=d)
        prow = [json.loads(l) for l in plain.stdout.splitlines()]
        frow = [json.loads(l) for l in full.stdout.splitlines()]
        failed = [x for x in frow if x["status"] == "failed"]
        extra = [x for x in frow if x not in prow]
        ok = (plain.returncode == 0 and full.returncode == 0 and len(prow) == 4 and
              len(frow) == 5 and extra == failed and len(failed) == 1)
        f = failed[0] if failed else {}
        want = {c: None for c in cols}
        want.update(job="exp", item_key="tree/big.txt", doc_id="big.txt", status="failed",
                    truncated=0,
                    note=items.get(b"tree/big.txt", (0, b""))[1].decode())
        ok = ok and set(f) == set(cols) and all(f[c] == want[c] for c in cols
                                                if c not in ("item_id", "finished_at"))
        ok = ok and isinstance(f.get("item_id"), int) and isinstance(f.get("finished_at"), float)
        keys = [x["item_key"] or "" for x in frow]
        ok = ok and keys == sorted(keys)
        check(ok, "export --include-failed jsonl: the failed item as a padded row",
              full.stderr + repr(f))
        # the invalid key: escaped, reversible, and its bytes in item_key_hex
        bad = [x for x in prow if "item_key_hex" in x]
        ok = len(bad) == 2 and all(bytes.fromhex(x["item_key_hex"]) == raw_key and
                                   isinstance(x["item_key"], str) and
                                   unescape_key(x["item_key"]) == raw_key and
                                   x["item_key"] == "tree/bad\\xff\\\\x\\xc3(.txt" for x in bad)
        ok = ok and all("item_key_hex" not in x for x in prow if x not in bad)
        ok = ok and all(list(x)[list(x).index("item_key") + 1] == "item_key_hex" for x in bad)
        check(ok, "export jsonl: a key that is not UTF-8 is escaped with item_key_hex",
              repr([(x["item_key"], x.get("item_key_hex")) for x in prow]))
        gen = [x for x in prow if x["task"] == "g"]
        check(len(gen) == 2 and all(isinstance(x["text"], str) and "text_hex" not in x
                                    for x in gen),
              "generated text is exported as UTF-8 (decoded lossily like HF, ids exact)",
              repr(gen))
        # CSV: the same rows; item_key_hex appended to the header because a key needs it
        for args, n in ((["--format", "csv"], 4), (["--format", "csv", "--include-failed"], 5)):
            r = run(["export", "job.toml"] + args, cwd=d)
            rows = list(csvmod.reader(io.StringIO(r.stdout, newline="")))
            hdr, body = rows[0] if rows else [], rows[1:]
            # (doc_id_hex too: the bad file name is the doc_id's as well)
            ok = r.returncode == 0 and hdr == cols + ["item_key_hex", "doc_id_hex"] and \
                len(body) == n
            byk = {}
            for row in body:
                byk.setdefault(row[1], []).append(dict(zip(hdr, row)))
            badk = "tree/bad\\xff\\\\x\\xc3(.txt"
            ok = ok and all(bytes.fromhex(x["item_key_hex"]) == raw_key for x in byk.get(badk, []))
            ok = ok and len(byk.get(badk, [])) == 2
            ok = ok and all(x["item_key_hex"] == "" for k, v in byk.items() if k != badk for x in v)
            if n == 5:
                fr = byk.get("tree/big.txt", [{}])[0]
                ok = ok and fr.get("status") == "failed" and fr.get("task") == "" and \
                    fr.get("truncated") == "0" and fr.get("note") == want["note"] and \
                    all(fr[c] == "" for c in cols if want[c] is None and c != "item_id"
                        and c != "finished_at")
            check(ok, "export %s: rows, item_key_hex column" % " ".join(args),
                  r.stderr + repr(rows[:1]))
        # status on a corrupt output: the index status reads (item_status) overwritten
        good = open(os.path.join(d, "out.db"), "rb").read()
        db = sqlite3.connect(os.path.join(d, "out.db"))
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'item_status'").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.close()
        for ext in ("-wal", "-shm"):
            if os.path.exists(os.path.join(d, "out.db" + ext)):
                os.remove(os.path.join(d, "out.db" + ext))
        broken = bytearray(good)
        broken[(root - 1) * page:root * page] = b"\xee" * page
        open(os.path.join(d, "out.db"), "wb").write(broken)
        st = run(["status", "job.toml"], cwd=d)
        check(st.returncode != 0 and "out.db" in st.stderr and st.stdout == "",
              "status on a corrupt output fails naming the file",
              "rc %d out %r err %r" % (st.returncode, st.stdout[:200], st.stderr))
        open(os.path.join(d, "out.db"), "w").write("this is not a database at all" * 100)
        st = run(["status", "job.toml"], cwd=d)
        check(st.returncode != 0 and "out.db" in st.stderr, "status on a non-database fails",
              "rc %d err %r" % (st.returncode, st.stderr))
        # the output folder: made when missing; a file in the way or a read-only one is named
        with open(os.path.join(d, "job2.toml"), "w") as f:
            f.write(job_text("exp2", src, tasks=tasks).replace('"out.db"', '"new/sub/out.db"'))
        r = run(["run", "job2.toml"], cwd=d)
        check(r.returncode == 3 and os.path.exists(os.path.join(d, "new", "sub", "out.db")),
              "run creates a missing output folder", r.stderr[-600:])
        open(os.path.join(d, "afile"), "w").write("x")
        with open(os.path.join(d, "job3.toml"), "w") as f:
            f.write(job_text("exp3", src, tasks=tasks).replace('"out.db"', '"afile/out.db"'))
        r = run(["run", "job3.toml"], cwd=d)
        check(r.returncode not in (0, 3) and "afile" in r.stderr and "folder" in r.stderr,
              "an output folder that is a file is named", r.stderr[-600:])
        ro = os.path.join(d, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        os.chmod(d, 0o755)
        with open(os.path.join(d, "job4.toml"), "w") as f:
            f.write(job_text("exp4", src, tasks=tasks).replace('"out.db"', '"ro/out.db"'))
        cmd = [FMBATCH, "run", "job4.toml"]
        if os.geteuid() == 0:  # root writes anywhere: run as nobody
            if shutil.which("setpriv"):
                cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
            else:
                cmd = None
                print("NOTE read-only output folder not tested (root, no setpriv)")
        if cmd:
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
            check(r.returncode not in (0, 3) and ro in r.stderr and "not writable" in r.stderr,
                  "a read-only output folder is named", "rc %d %s" % (r.returncode, r.stderr[-600:]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if not os.path.exists(FMBATCH):
    check(False, "batch e2e", "no binary at " + FMBATCH)
    sys.exit(1)
for kind, make in (("tar.gz", make_targz), ("zip", make_zip), ("jsonl.gz", make_jsonl),
                   ("files", make_dir), ("sqlite", make_sqlite)):
    source_case(kind, make)
failing_items()
resume_and_concurrency()
fingerprint_and_changes()
token_limit()
export_cases()
sys.exit(1 if failures() else 0)
