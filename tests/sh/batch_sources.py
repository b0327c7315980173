"""End-to-end tests of the sources' edge cases (run from the repository root, FMBATCH = the binary).

Every input lands or is a failed item with its reason, never missing: `run` exits 3 where items
failed, `check` and `status` count the failed items, and the message names the file and the row,
line or entry. Prints PASS/FAIL lines for tests/run.sh; each case builds its inputs in a
temporary folder.
"""
import ctypes
import ctypes.util
import gzip
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import zlib

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
def run(args, **kw):
    return subprocess.run([FMBATCH] + args, capture_output=True, text=True, **kw)


def write_job(d, source, name="job.toml", output="out.db"):
    with open(os.path.join(d, name), "w") as f:
        f.write('[job]\nname = "src"\nmodel = "%s"\noutput = "%s"\nthreads = 1\n%s\n'
                '[[task]]\nname = "ppl"\nkind = "score"\n' % (MODEL, output, source))


def items(d, output="out.db"):
    """key -> (status, error, finished_at, attempts) from the output's queue."""
    db = sqlite3.connect(os.path.join(d, output))
    try:
        return {k: (s, e or "", f, a) for k, s, e, f, a in
                db.execute("SELECT key, status, error, finished_at, attempts FROM item")}
    finally:
        db.close()


def status(d):
    return json.loads(run(["status", "job.toml"], cwd=d).stdout)


def check_json(d):
    c = run(["check", "job.toml"], cwd=d)
    try:
        return json.loads(c.stdout)
    except ValueError:
        return {"rc": c.returncode, "stderr": c.stderr}


def done_failed(it):
    done = sorted(k for k, v in it.items() if v[0] == "done")
    failed = {k: v[1] for k, v in it.items() if v[0] == "failed"}
    return done, failed


def failed_lines(stderr):
    return [l for l in stderr.splitlines() if ": failed: " in l]


def rerun_is_quiet(d, it, name):
    """A rerun exits 0 (nothing failed in it: exit 3 is for this run's failures), records no
    new failure and recomputes nothing; the old failures are still counted."""
    r = run(["run", "job.toml"], cwd=d)
    it2 = items(d)
    check(r.returncode == 0 and not failed_lines(r.stderr) and it2 == it and
          "0 failed in this run" in r.stderr, name,
          "rc %d, new failures %r, items changed: %r" % (
              r.returncode, failed_lines(r.stderr)[:5],
              sorted(k for k in set(it) | set(it2) if it.get(k) != it2.get(k))[:5]))


def tmp():
    return tempfile.mkdtemp(prefix="fmb_src_")


# ------------------------------------------------------------------------------------------
# 1. SQLite: NULL keys and repeated keys


def sqlite_null_keys():
    d = tmp()
    try:
        db = sqlite3.connect(os.path.join(d, "src.db"))
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, k TEXT, body TEXT)")
        keyed = []
        for i in range(170):
            k = None if i % 17 in (1, 4, 6, 9, 11, 14, 16) else "k%03d" % i
            db.execute("INSERT INTO docs (k, body) VALUES (?, ?)", (k, "Document number %d." % i))
            if k:
                keyed.append(k)
        db.commit()
        db.close()
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "src.db"\n'
                     'query = "SELECT k, body FROM docs"\n')
        r = run(["run", "job.toml"], cwd=d)
        it = items(d)
        done, failed = done_failed(it)
        check(r.returncode == 3, "sqlite NULL keys: run exits 3", "rc %d %s" % (r.returncode, r.stderr[-500:]))
        check(done == sorted(keyed), "sqlite NULL keys: the 100 keyed rows are done",
              "%d done: %r" % (len(done), done[:5]))
        check(len(failed) == 70 and all("NULL" in e and "row" in e for e in failed.values()),
              "sqlite NULL keys: 70 failed items naming the row", "%d: %r" % (len(failed), list(failed.items())[:3]))
        fl = failed_lines(r.stderr)
        check(len(fl) == 70 and all("src.db" in l for l in fl), "sqlite NULL keys: messages name the database",
              fl[:3])
        st = status(d)
        check(st.get("done") == 100 and st.get("failed") == 70, "sqlite NULL keys: status counts", st)
        cj = check_json(d)
        check(cj.get("items") == 170 and cj.get("failing_items") == 70, "sqlite NULL keys: check counts",
              {k: cj.get(k) for k in ("items", "failing_items", "rc", "stderr")})
        rerun_is_quiet(d, it, "sqlite NULL keys: a rerun recomputes and re-fails nothing")
    finally:
        shutil.rmtree(d)


def sqlite_repeated_keys():
    d = tmp()
    try:
        db = sqlite3.connect(os.path.join(d, "src.db"))
        db.execute("CREATE TABLE docs (k INTEGER, body TEXT)")
        rows = [(i // 2, "Text %d of key %d." % (i, i // 2)) for i in range(200)]
        rows.reverse()  # insertion order differs from key order
        db.executemany("INSERT INTO docs VALUES (?, ?)", rows)
        # a key written as an integer and as text is one key too
        db.execute("INSERT INTO docs VALUES ('7', 'the key seven once more, as text')")
        db.commit()
        db.close()
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "src.db"\n'
                     'query = "SELECT k, body FROM docs"\npage_rows = 7\n')
        r = run(["run", "job.toml"], cwd=d)
        it = items(d)
        done, failed = done_failed(it)
        check(r.returncode == 3, "sqlite repeated keys: run exits 3", "rc %d %s" % (r.returncode, r.stderr[-500:]))
        check(done == sorted(str(i) for i in range(100)), "sqlite repeated keys: each key done once",
              "%d done" % len(done))
        check(len(failed) == 101 and all("duplicate key" in e and "first at src.db row" in e
                                         for e in failed.values()),
              "sqlite repeated keys: every repeat a failed item naming the first row",
              "%d: %r" % (len(failed), list(failed.items())[:3]))
        check(all(k.startswith("src.db:row ") for k in failed), "sqlite repeated keys: keyed by their row",
              sorted(failed)[:5])
        st = status(d)
        check(st.get("done") == 100 and st.get("failed") == 101 and
              any(f["reason"].startswith("duplicate key") for f in st.get("failures", [])),
              "sqlite repeated keys: status counts and groups them", st)
        cj = check_json(d)
        check(cj.get("items") == 201 and cj.get("failing_items") == 101, "sqlite repeated keys: check counts",
              {k: cj.get(k) for k in ("items", "failing_items", "rc", "stderr")})
        rerun_is_quiet(d, it, "sqlite repeated keys: a rerun recomputes and re-fails nothing")
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------
# 2. Repeated keys in JSONL and archives


def jsonl_repeated_ids():
    d = tmp()
    try:
        with open(os.path.join(d, "x.jsonl"), "w") as f:
            for i, k in enumerate(["a", "b", "a", "c", "b", "a"]):
                f.write(json.dumps({"id": k, "text": "Line %d with the id %s." % (i + 1, k)}) + "\n")
        write_job(d, '[source]\nkind = "jsonl"\npaths = ["x.jsonl"]\nid_field = "id"\n')
        r = run(["run", "job.toml"], cwd=d)
        it = items(d)
        done, failed = done_failed(it)
        check(r.returncode == 3, "jsonl repeated ids: run exits 3", "rc %d %s" % (r.returncode, r.stderr[-500:]))
        check(done == ["x.jsonl#a", "x.jsonl#b", "x.jsonl#c"], "jsonl repeated ids: the first of each lands", done)
        want = {"x.jsonl:3": "x.jsonl:1", "x.jsonl:5": "x.jsonl:2", "x.jsonl:6": "x.jsonl:1"}
        check(sorted(failed) == sorted(want) and
              all("duplicate key" in failed[k] and "first at " + v in failed[k] for k, v in want.items()),
              "jsonl repeated ids: repeats are failed items at their line naming the first", failed)
        st = status(d)
        check(st.get("done") == 3 and st.get("failed") == 3, "jsonl repeated ids: status counts", st)
        cj = check_json(d)
        check(cj.get("items") == 6 and cj.get("failing_items") == 3 and
              sorted(f["key"] for f in cj.get("failing", [])) == sorted(want),
              "jsonl repeated ids: check counts and lists them",
              {k: cj.get(k) for k in ("items", "failing_items", "failing", "rc", "stderr")})
        rerun_is_quiet(d, it, "jsonl repeated ids: a rerun recomputes and re-fails nothing")
    finally:
        shutil.rmtree(d)


def tar_bytes(entries, fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, text in entries:
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def tar_repeated_names():
    d = tmp()
    try:
        with open(os.path.join(d, "t.tar"), "wb") as f:
            f.write(tar_bytes([("a.txt", "First a."), ("b.txt", "Only b."), ("a.txt", "Second a.")]))
        write_job(d, '[source]\nkind = "archive"\npaths = ["t.tar"]\n')
        r = run(["run", "job.toml"], cwd=d)
        it = items(d)
        done, failed = done_failed(it)
        check(r.returncode == 3, "tar repeated names: run exits 3", "rc %d %s" % (r.returncode, r.stderr[-500:]))
        check(done == ["t.tar!a.txt", "t.tar!b.txt"], "tar repeated names: the first of each lands", done)
        check(list(failed) == ["t.tar!a.txt@3"] and "duplicate key" in failed["t.tar!a.txt@3"] and
              "first at t.tar entry 1" in failed["t.tar!a.txt@3"],
              "tar repeated names: the repeat is a failed item naming its entry and the first", failed)
        rerun_is_quiet(d, it, "tar repeated names: a rerun recomputes and re-fails nothing")
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------
# 3. Damaged and truncated archives

TEN = [("e%02d.txt" % i, "Entry %d: %s" % (i, "some words to read " * (10 + i))) for i in range(10)]


def header_offsets(raw):
    """Offsets of the ustar headers in a tar made by tar_bytes."""
    offs, at = [], 0
    while at + 512 <= len(raw) and raw[at:at + 512] != b"\0" * 512:
        offs.append(at)
        size = int(raw[at + 124:at + 136].strip(b"\0 ") or b"0", 8)
        at += 512 + (size + 511) // 512 * 512
    return offs


def archive_case(d, name, raw, want_done, what, reasons):
    with open(os.path.join(d, name), "wb") as f:
        f.write(raw)
    write_job(d, '[source]\nkind = "archive"\npaths = ["%s"]\n' % name, name=name + ".toml",
              output=name + ".db")
    r = run(["run", name + ".toml"], cwd=d)
    it = items(d, name + ".db")
    done, failed = done_failed(it)
    check(r.returncode == 3, "%s: run exits 3" % what, "rc %d %s" % (r.returncode, r.stderr[-500:]))
    check(done == sorted(name + "!" + n for n in want_done), "%s: the readable entries land" % what,
          "done %r" % done)
    check(len(failed) >= 1 and all(k.startswith(name + "!") for k in failed) and
          any(any(w in e for w in reasons) for e in failed.values()) and
          not any(e.endswith("?") for e in failed.values()),
          "%s: a failed item says why" % what, failed)
    return failed


def damaged_archives():
    d = tmp()
    try:
        raw = bytearray(tar_bytes(TEN))
        offs = header_offsets(raw)
        names = [n for n, _ in TEN]
        # entry 5's header checksum no longer matches
        bad = bytearray(raw)
        bad[offs[4] + 148:offs[4] + 156] = b"0000000\0"
        failed = archive_case(d, "hdr.tar", bytes(bad), names[:4] + names[5:], "damaged tar header",
                              ("damaged", "header"))
        check(any("e03.txt" in e for e in failed.values()), "damaged tar header: names the entry before", failed)
        # cut exactly at entry 7's header: no end-of-archive blocks
        archive_case(d, "cut.tar", bytes(raw[:offs[6]]), names[:6], "tar cut at an entry boundary",
                     ("ends early", "truncated"))
        # cut inside entry 7's data
        archive_case(d, "mid.tar", bytes(raw[:offs[6] + 600]), names[:6], "tar cut inside an entry",
                     ("truncated", "Truncated", "ends early"))
        # a .tar.gz cut in half: what can be decompressed lands
        gz = gzip.compress(bytes(raw), mtime=0)
        cut = gz[:len(gz) // 2]
        part = zlib.decompressobj(31).decompress(cut)
        readable = [names[i] for i, o in enumerate(offs)
                    if i + 1 < len(offs) and offs[i + 1] + 512 <= len(part)]
        archive_case(d, "half.tar.gz", cut, readable, "tar.gz cut in half", ("truncated", "Truncated", "ends early"))
    finally:
        shutil.rmtree(d)


def write_7z(path, entries):
    lib = ctypes.CDLL(ctypes.util.find_library("archive") or "libarchive.so.13")
    lib.archive_write_new.restype = ctypes.c_void_p
    lib.archive_entry_new.restype = ctypes.c_void_p
    for fn in ("archive_write_set_format_7zip", "archive_write_close", "archive_write_free"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.archive_write_open_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.archive_entry_set_pathname.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.archive_entry_set_size.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.archive_entry_set_filetype.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.archive_entry_set_perm.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.archive_write_header.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.archive_write_data.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.archive_entry_free.argtypes = [ctypes.c_void_p]
    a = lib.archive_write_new()
    lib.archive_write_set_format_7zip(a)
    lib.archive_write_open_filename(a, path.encode())
    for name, text in entries:
        e = lib.archive_entry_new()
        data = text.encode()
        lib.archive_entry_set_pathname(e, name.encode())
        lib.archive_entry_set_size(e, len(data))
        lib.archive_entry_set_filetype(e, 0o100000)
        lib.archive_entry_set_perm(e, 0o644)
        lib.archive_write_header(a, e)
        lib.archive_write_data(a, data, len(data))
        lib.archive_entry_free(e)
    lib.archive_write_close(a)
    lib.archive_write_free(a)


def truncated_7z():
    d = tmp()
    try:
        p = os.path.join(d, "full.7z")
        write_7z(p, TEN)
        raw = open(p, "rb").read()
        for cut, what in ((len(raw) // 2, "7z cut in half"), (len(raw) - 20, "7z missing its tail")):
            name = "c%d.7z" % cut
            with open(os.path.join(d, name), "wb") as f:
                f.write(raw[:cut])
            write_job(d, '[source]\nkind = "archive"\npaths = ["%s"]\n' % name, name=name + ".toml",
                      output=name + ".db")
            r = run(["run", name + ".toml"], cwd=d)
            it = items(d, name + ".db")
            _, failed = done_failed(it)
            check(r.returncode == 3 and len(failed) >= 1 and
                  all(k.startswith(name) and e and not e.endswith("?") and "(null)" not in e and
                      ("7z" in e or "7-Zip" in e or "truncated" in e.lower()) for k, e in failed.items()),
                  "%s: a failed item with its reason" % what, "rc %d %r %s" % (r.returncode, failed, r.stderr[-300:]))
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------
# 4. A truncated .jsonl.gz


def truncated_jsonl_gz():
    d = tmp()
    try:
        lines = [json.dumps({"text": "Line %d: %s" % (i, "lorem ipsum dolor " * (i % 5 + 1))}) for i in range(40)]
        gz = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
        cut = gz[:len(gz) * 2 // 3]
        part = zlib.decompressobj(31).decompress(cut)
        complete = part.count(b"\n")
        with open(os.path.join(d, "x.jsonl.gz"), "wb") as f:
            f.write(cut)
        write_job(d, '[source]\nkind = "jsonl"\npaths = ["x.jsonl.gz"]\n')
        r = run(["run", "job.toml"], cwd=d)
        it = items(d)
        done, failed = done_failed(it)
        check(r.returncode == 3, "truncated jsonl.gz: run exits 3", "rc %d %s" % (r.returncode, r.stderr[-500:]))
        check(complete > 0 and done == sorted("x.jsonl.gz:%d" % (i + 1) for i in range(complete)),
              "truncated jsonl.gz: the %d complete lines land" % complete, "done %r" % done)
        check(len(failed) == 1 and list(failed)[0] == "x.jsonl.gz:%d" % (complete + 1) and
              "truncated" in list(failed.values())[0].lower(),
              "truncated jsonl.gz: the rest is one failed item saying so", failed)
    finally:
        shutil.rmtree(d)


def multi_member_gz():
    """Concatenated gzip members (pigz, bgzip) and zero padding after the last are one stream."""
    d = tmp()
    try:
        raw = b"".join(gzip.compress((json.dumps({"text": "Member %d." % i}) + "\n").encode(), mtime=0)
                       for i in range(3)) + b"\0" * 512
        with open(os.path.join(d, "m.jsonl.gz"), "wb") as f:
            f.write(raw)
        write_job(d, '[source]\nkind = "jsonl"\npaths = ["m.jsonl.gz"]\n')
        r = run(["run", "job.toml"], cwd=d)
        done, failed = done_failed(items(d))
        check(r.returncode == 0 and done == ["m.jsonl.gz:1", "m.jsonl.gz:2", "m.jsonl.gz:3"] and not failed,
              "a multi-member .jsonl.gz is read whole", "rc %d %r %r" % (r.returncode, done, failed))
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------------------------
# 5. Messages: a locked source database, a UTF-8 BOM


def locked_database():
    d = tmp()
    try:
        p = os.path.join(d, "src.db")
        db = sqlite3.connect(p, isolation_level=None)
        db.execute("CREATE TABLE docs (k TEXT, body TEXT)")
        db.execute("INSERT INTO docs VALUES ('a', 'A document.')")
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "src.db"\n'
                     'query = "SELECT k, body FROM docs"\n')
        db.execute("BEGIN EXCLUSIVE")
        try:
            r = run(["check", "job.toml"], cwd=d)
        finally:
            db.execute("ROLLBACK")
            db.close()
        check(r.returncode not in (0, 3) and "src.db" in r.stderr and "locked" in r.stderr and
              "[source].query" not in r.stderr,
              "a locked source database is named, not blamed on the query", "rc %d: %s" % (r.returncode, r.stderr))
        with open(os.path.join(d, "junk.db"), "wb") as f:
            f.write(b"this is not a database " * 100)
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "junk.db"\n'
                     'query = "SELECT k, body FROM docs"\n')
        r = run(["check", "job.toml"], cwd=d)
        check(r.returncode != 0 and "junk.db" in r.stderr and "[source].query" not in r.stderr,
              "a file that is not a database is named, not blamed on the query", "rc %d: %s" % (r.returncode, r.stderr))
    finally:
        shutil.rmtree(d)


def jsonl_bom():
    d = tmp()
    try:
        with open(os.path.join(d, "b.jsonl"), "wb") as f:
            f.write(b"\xef\xbb\xbf" + json.dumps({"text": "First line after a BOM."}).encode() + b"\n" +
                    json.dumps({"text": "Second line."}).encode() + b"\n")
        write_job(d, '[source]\nkind = "jsonl"\npaths = ["b.jsonl"]\n')
        r = run(["run", "job.toml"], cwd=d)
        done, failed = done_failed(items(d))
        check(r.returncode == 0 and done == ["b.jsonl:1", "b.jsonl:2"] and not failed,
              "a UTF-8 BOM at the start of a JSONL file is skipped", "rc %d %r %r" % (r.returncode, done, failed))
    finally:
        shutil.rmtree(d)


def sqlite_page_plan():
    """A key SQLite cannot seek to (no index) makes every page sort the whole result: run and
    check say so once, naming the remedy; with an index on the key, or the rowid as the key,
    they do not. The rows are the same either way."""
    d = tmp()
    try:
        db = sqlite3.connect(os.path.join(d, "src.db"))
        db.execute("CREATE TABLE docs (k TEXT, body TEXT)")
        db.execute("CREATE TABLE byid (id INTEGER PRIMARY KEY, body TEXT)")
        for i in (5, 3, 9, 1, 7, 2, 8, 4, 6, 0):
            db.execute("INSERT INTO docs VALUES (?, ?)", ("d%d" % i, "Text number %d." % i))
            db.execute("INSERT INTO byid VALUES (?, ?)", (i, "Text number %d." % i))
        db.commit()
        db.close()
        note = "sorts the query's whole result for every page of 3 rows"
        query = 'query = "SELECT k, body FROM docs"\npage_rows = 3\n'
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "src.db"\n' + query)
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 0 and r.stderr.count(note) == 1 and "index the key column" in r.stderr,
              "sqlite without an index on the key: run notes it once, with the remedy",
              "rc %d %s" % (r.returncode, r.stderr[-600:]))
        c = run(["check", "job.toml"], cwd=d)
        notes = json.loads(c.stdout).get("notes", []) if c.returncode == 0 else []
        check(any(note in n for n in notes) and note in c.stderr,
              "sqlite without an index on the key: check notes it", "rc %d %r %s" % (c.returncode, notes, c.stderr[-300:]))
        rows = sorted((k, v[0]) for k, v in items(d).items())
        db = sqlite3.connect(os.path.join(d, "src.db"))
        db.execute("CREATE INDEX docs_k ON docs (k)")
        db.commit()
        db.close()
        os.remove(os.path.join(d, "out.db"))
        r = run(["run", "job.toml"], cwd=d)
        check(r.returncode == 0 and note not in r.stderr and
              sorted((k, v[0]) for k, v in items(d).items()) == rows and len(rows) == 10,
              "sqlite with an index on the key: no note, the same 10 rows",
              "rc %d %s" % (r.returncode, r.stderr[-600:]))
        write_job(d, '[source]\nkind = "sqlite"\ndatabase = "src.db"\n'
                     'query = "SELECT id, body FROM byid"\npage_rows = 3\n', output="byid.db")
        r = run(["run", "job.toml"], cwd=d)
        c = run(["check", "job.toml"], cwd=d)
        check(r.returncode == 0 and note not in r.stderr and note not in c.stderr and
              len(items(d, "byid.db")) == 10,
              "sqlite with the rowid as the key: no note", "rc %d %s" % (r.returncode, r.stderr[-600:]))
    finally:
        shutil.rmtree(d)


if not os.path.exists(FMBATCH):
    check(False, "batch sources e2e", "no binary at " + FMBATCH)
    sys.exit(1)
for case in (sqlite_null_keys, sqlite_repeated_keys, sqlite_page_plan, jsonl_repeated_ids, tar_repeated_names,
             damaged_archives, truncated_7z, truncated_jsonl_gz, multi_member_gz, locked_database, jsonl_bom):
    case()
sys.exit(1 if failures() else 0)
