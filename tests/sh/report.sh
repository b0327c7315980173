#!/bin/sh
# `fmbatch report`: a job with a score, a choice and a generate task over a few documents (one
# line fails) on the tiny fixture model. The terminal report's counts are checked against
# sqlite3 queries of the same database; the HTML page must parse, be self-contained and escape
# document text; where chromium is installed, a headless screenshot must show the charts.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cat >"$T/d.jsonl" <<'D'
{"id":"a","text":"The quick brown fox jumps over the lazy dog. It was a sunny day in the park."}
{"id":"b","text":"Hello <script>alert(1)</script> & goodbye"}
{"id":"c","text":"1 2 3 4 5 6 7 8 9 10 11 12"}
{bad json
{"id":"e","text":"Der schnelle braune Fuchs springt\n\n   über den faulen Hund."}
{"id":"f","text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
{"id":"g","text":"A second ordinary sentence about the weather and the sea."}
D
cat >"$T/job.toml" <<J
[job]
name = "rep"
model = "$PWD/tests/fixtures/tiny-a"
output = "out.db"

[source]
kind = "jsonl"
paths = ["d.jsonl"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"

[[task]]
name = "lang"
kind = "choice"
prompt = "{document}\n\nThe language of this text is"
choices = [" English", " German", " French"]

[[task]]
name = "title"
kind = "generate"
prompt = "{document}\n\nTitle:"
max_new_tokens = 8
extract = { first = '^\s*(?<first>\S+)' }
J

# Before any run: exit 1 with a clear message.
"$F" report "$T/job.toml" >/dev/null 2>"$T/err0"
rc=$?
if [ $rc -eq 1 ] && grep -q "no results yet: run \`fmbatch run" "$T/err0"; then
    echo "PASS report: no output database yet exits 1 saying to run first"
else
    echo "FAIL report: no output yet: rc $rc: $(cat "$T/err0")"
fi
# A bad job file: exit 2 naming it.
printf '[job\n' >"$T/bad.toml"
"$F" report "$T/bad.toml" >/dev/null 2>"$T/err1"
rc=$?
if [ $rc -eq 2 ] && grep -q "bad.toml" "$T/err1"; then
    echo "PASS report: a bad job file exits 2 naming it"
else
    echo "FAIL report: bad job file: rc $rc: $(cat "$T/err1")"
fi

"$F" run "$T/job.toml" --progress none >/dev/null 2>&1
"$F" report "$T/job.toml" --top 3 --html "$T/r.html" >"$T/report.txt" 2>"$T/err2"
rc=$?
if [ $rc -ne 0 ]; then
    echo "FAIL report: exited $rc: $(cat "$T/err2")"
    exit 0
fi
# An --html path that cannot be written: exit 2 naming it.
"$F" report "$T/job.toml" --html "$T/no/such/dir/r.html" >/dev/null 2>"$T/err3"
rc=$?
if [ $rc -eq 2 ] && grep -q "no/such/dir/r.html" "$T/err3"; then
    echo "PASS report: an unwritable --html exits 2 naming it"
else
    echo "FAIL report: unwritable --html: rc $rc: $(cat "$T/err3")"
fi

python3 - "$T" <<'PY'
import html.parser, os, re, sqlite3, struct, sys, zlib

T = sys.argv[1]
txt = open(os.path.join(T, "report.txt"), encoding="utf-8").read()
db = sqlite3.connect(os.path.join(T, "out.db"))
q = lambda sql, *a: db.execute(sql, a).fetchall()


def check(name, ok, why=""):
    print(("PASS report: %s" % name) if ok else ("FAIL report: %s: %s" % (name, why)))


def section(title):
    m = re.search(r"^%s.*?(?=^\S|\Z)" % re.escape(title), txt, re.M | re.S)
    return m.group(0) if m else ""


# item counts
want = dict(q("SELECT status, count(*) FROM item GROUP BY status"))
sec = section("Items")
rows = [l.split() for l in sec.splitlines()[1:3]]
got = dict(zip(rows[0], map(int, rows[1]))) if len(rows) == 2 else {}
exp = {s: want.get(s, 0) for s in ("pending", "running", "done", "failed", "dead")}
exp["total"] = sum(want.values())
check("item counts match the database", got == exp and exp["failed"] == 1, "%r vs %r" % (got, exp))

# results by task
sec = section("Results by task")
got = {l.split()[0]: int(l.split()[2]) for l in sec.splitlines()[2:] if l.strip()}
exp = dict(q("SELECT task, count(*) FROM result WHERE status = 'ok' GROUP BY task"))
check("results by task match the database", got == exp and len(exp) == 3, "%r vs %r" % (got, exp))

# score: stats, histogram bins sum to the scored documents, best/worst order
sec = section("Score task 'ppl'")
bins = [int(m.group(1)) for m in re.finditer(r"^\s+[\d.]+ - +[\d.]+ [)\]] +(\d+)", sec, re.M)]
n_scored = q("SELECT count(*) FROM result WHERE task = 'ppl' AND bits_per_byte IS NOT NULL")[0][0]
check("histogram bins sum to the scored documents", 10 <= len(bins) <= 16 and sum(bins) == n_scored,
      "%r vs %d" % (bins, n_scored))
vals = sorted(v for (v,) in q("SELECT bits_per_byte FROM result WHERE task = 'ppl'"))
m = re.search(r"bits/byte +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)", sec)
n = len(vals)
med = (vals[(n - 1) // 2] + vals[n // 2]) / 2
exp = [vals[0], med, sum(vals) / n, vals[-1]]
check("bits-per-byte min/median/mean/max match", m and all(abs(float(g) - e) < 1e-3 for g, e in zip(m.groups(), exp)),
      "%r vs %r" % (m and m.groups(), exp))
best = re.findall(r"^ +[\d.]+ +[\d.e+]+ +\d+  (\S+)$", sec.split("worst")[0].split("best")[1], re.M)
worst = re.findall(r"^ +[\d.]+ +[\d.e+]+ +\d+  (\S+)$", sec.split("worst")[1], re.M)
eb = [k for (k,) in q("SELECT item_key FROM result WHERE task = 'ppl' ORDER BY bits_per_byte, item_key LIMIT 3")]
ew = [k for (k,) in q("SELECT item_key FROM result WHERE task = 'ppl' ORDER BY bits_per_byte DESC, item_key LIMIT 3")]
check("best and worst --top 3 documents in order", best == eb and worst == ew, "%r %r vs %r %r" % (best, worst, eb, ew))
check("snippets come from the source, whitespace collapsed",
      '"Der schnelle braune Fuchs springt über den faulen Hund."' in txt,
      sec)
check("a long document's snippet is cut to ~60 characters",
      ('"' + "a" * 60 + "…\"") in txt, sec)

# choice: counts per answer sum to the ok rows
sec = section("Choice task 'lang'")
got = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (English|German|French) +(\d+) +[\d.]+%", sec, re.M)}
exp = {k.strip(): 0 for k in ("English", "German", "French")}
exp.update({b.strip(): c for b, c in q("SELECT best, count(*) FROM result WHERE task = 'lang' AND status = 'ok' GROUP BY best")})
total = re.search(r"\(all\) +(\d+)", sec)
n_ok = q("SELECT count(*) FROM result WHERE task = 'lang' AND status = 'ok'")[0][0]
check("choice distribution matches and sums to the rows", got == exp and total and int(total.group(1)) == n_ok == sum(got.values()),
      "%r vs %r" % (got, exp))

# generate: --top 3 answers by key, with their extracted field
sec = section("Generate task 'title'")
keys = re.findall(r"^    (\S+) \[", sec, re.M)
ek = [k for (k,) in q("SELECT item_key FROM result WHERE task = 'title' AND status = 'ok' ORDER BY item_key LIMIT 3")]
check("generate answers listed by key with fields", keys == ek and sec.count("fields: first=") == 3, sec)

# failures grouped by kind, with an example
sec = section("Failures by kind")
exp = q("SELECT substr(error, 1, instr(error, ':') - 1), count(*), min(key) FROM item WHERE status IN ('failed', 'dead') GROUP BY 1")
ok = all(re.search(r"^ +%d  %s\n +e\.g\. %s" % (c, re.escape(r), re.escape(k)), sec, re.M) for r, c, k in exp)
check("failures grouped by kind with an example", ok and exp == [("bad JSON", 1, "d.jsonl:4")], "%r vs %r" % (sec, exp))

# throughput
done, tokens = q("SELECT count(*), sum(tokens) FROM item WHERE status = 'done'")[0]
sec = section("Throughput")
m1 = re.search(r"documents done +(\d+)", sec)
m2 = re.search(r"tokens +(\d+) +[\d.]+ per second", sec)
check("throughput counts documents and tokens", m1 and m2 and int(m1.group(1)) == done and int(m2.group(1)) == tokens, sec)

# 80 columns, no escape sequences when stdout is not a terminal
wide = [l for l in txt.splitlines() if len(l) > 80]
check("every line fits 80 columns", not wide, wide)
check("no colour when stdout is not a terminal", "\x1b" not in txt)

# HTML: balanced tags, self-contained, escaped
page = open(os.path.join(T, "r.html"), encoding="utf-8").read()
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.bad, self.ids, self.svgs, self.scripts = [], [], [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "svg":
            self.svgs.append(a)
        if tag == "script":
            self.scripts += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "svg":
            self.svgs.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.bad.append((tag, list(self.stack[-3:])))
        else:
            self.stack.pop()


p = P()
p.feed(page)
p.close()
check("HTML tags are balanced", not p.bad and not p.stack, "%r %r" % (p.bad[:3], p.stack))
check("HTML ids are unique", len(p.ids) == len(set(p.ids)), p.ids)
ids = set(p.ids)
check("HTML has the charts", {"hist-ppl", "choice-lang"} <= ids and all("chart" in s.get("class", "") for s in p.svgs),
      p.ids)
check("HTML is self-contained", not re.search(r"https?://|src=|<link|@import|url\(", page, re.I))
check("document text is escaped in the HTML",
      p.scripts == 0 and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; goodbye" in page and "<script" not in page)
hist = re.search(r'<svg class="chart hist" id="hist-ppl".*?</svg>', page, re.S)
counts = [int(c) for c in re.findall(r'data-count="(\d+)"', hist.group(0))] if hist else []
check("HTML histogram bars sum to the scored documents", sum(counts) == n_scored and len(counts) == len(bins), counts)

# the browser: where chromium is installed, the page renders and its charts are not blank
chromium = next((c for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.access(c, os.X_OK)), None)
if not chromium:
    print("NOTE report: chromium is not installed; skipped the browser check")
    sys.exit(0)
import subprocess

shot = os.path.join(T, "shot.png")
url = "file://" + os.path.join(T, "r.html")
base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + os.path.join(T, "chr")]
try:
    subprocess.run(base + ["--screenshot=" + shot, "--window-size=1200,2000", url], capture_output=True, timeout=120)
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, timeout=120).stdout.decode("utf-8", "replace")
except subprocess.TimeoutExpired:
    dom = ""
check("the browser keeps the SVG charts (dump-dom)", 'id="hist-ppl"' in dom and 'id="choice-lang"' in dom and "<rect" in dom,
      dom[:300])


def png_rgb(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = hdr[:4]
    assert depth == 8 and ctype in (2, 6), "unexpected PNG format %r" % (hdr,)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


try:
    w, h, bpp, rows = png_rgb(shot)
    # the bars' blue (#3b73b9): strongly blue pixels, as opposed to text and grey borders
    blue = sum(1 for r in rows for x in range(0, w * bpp, bpp * 2)
               if r[x + 2] > 150 and r[x + 2] - r[x] > 80)
    white = sum(1 for r in rows for x in range(0, w * bpp, bpp * 2) if r[x] > 245 and r[x + 1] > 245 and r[x + 2] > 245)
    total = h * ((w + 1) // 2)
    check("the screenshot shows the charts (coloured bar pixels)", (w, h) == (1200, 2000) and blue > 2000 and white < total,
          "size %dx%d, blue %d, white %d of %d" % (w, h, blue, white, total))
    print("NOTE report: screenshot %dx%d: %d bar-blue and %d white of %d sampled pixels" % (w, h, blue, white, total))
except Exception as e:  # a missing or broken screenshot
    check("the screenshot shows the charts (coloured bar pixels)", False, repr(e))
PY
