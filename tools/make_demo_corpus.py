#!/usr/bin/env python3
"""Builds the demo corpus: jobs/demo/corpus.tar.gz (read by jobs/demo/demo.toml) and
jobs/demo/corpus.jsonl (read by jobs/demo/demo-jsonl.toml).

A few hundred short documents (200-3000 bytes) of several kinds, cut from freely licensed text
that Debian ships:
  prose      English narrative, technical documentation and quotes/dialogue (the held-out
             file when given, below; else fortunes and /usr/share/doc READMEs of the packages
             the build installs);
  other      German, French, Spanish and Italian (fortunes-de, -es, -it; French from gettext
             catalogs, as Debian 12 has no fortunes-fr; or the held-out file);
  code       C (libzstd-dev's examples, the -dev headers the build installs), Python (python3's
             standard library), shell (gzip's, xz-utils' and zstd's scripts in /usr/bin);
  boilerplate  licence texts and headers (/usr/share/common-licenses), cookie and legal
             notices and navigation text (written here from templates);
  garbage    random bytes, base64 noise, keyboard mash, repeated characters, hex dumps;
  broken     inputs that must fail their own row while the rest lands: in the archive, an
             entry over the job's max_entry_bytes and a second entry with an existing name; in
             the JSON Lines file, a line that is not JSON, a line without the text field, a
             line over max_entry_bytes and a repeated id.
The archive also holds one empty document (it lands, with 0 tokens).

Held-out text: the demo model was trained on Debian text; prose is more telling when the model
has not seen it. Give a JSON Lines file of {"source": "...", "text": "..."} lines
(`--heldout FILE`) and each prose or language kind it holds comes from it (the kind from the
source, HELDOUT_KINDS, else guessed from the text); the kinds it lacks come from the Debian
files above. The committed corpus was made from the demo model's held-out split (kjv,
fortune-en, fortune-de, man, usr-share-doc, python-doc; Spanish, French and Italian were not
in its training text and come from the Debian files):
  python3 tools/make_demo_corpus.py --heldout /work/demo-text/heldout.jsonl
(that file: 384 lines, sha256 7cc152d4a22b3699cac3b52f5b11e05359ea10d208efd2b3e5577702ad39f840).

Deterministic: the same seed and the same input files give the same bytes (tar entries sorted,
mtime 0, uid/gid 0, no user names; gzip with mtime 0 and no file name; JSON keys sorted). The
input files are those of Debian 12's packages fortunes, fortunes-de/-es/-it, base-files,
bash, coreutils, gzip, xz-utils, zstd, libzstd-dev, libjansson-dev, libpcre2-dev,
libsqlite3-dev, libarchive-dev, libopenblas-dev and python3.11; a missing file is skipped (and
the output differs).

  python3 tools/make_demo_corpus.py [--heldout FILE] [--out jobs/demo] [--seed 12]
"""
import argparse
import base64
import gettext
import glob
import gzip
import io
import json
import os
import random
import re
import sys
import tarfile

MIN_BYTES, MAX_BYTES = 200, 3000
# The demo jobs' max_entry_bytes: the over-long broken inputs are made larger than this.
MAX_ENTRY_BYTES = 16384

FORTUNES = "/usr/share/games/fortunes"
# English fortune files with no offensive content, by the kind of prose they mostly hold.
NARRATIVE_FILES = ["fortunes", "literature", "miscellaneous", "people", "wisdom", "work",
                   "education", "pets", "food", "kids", "science", "medicine", "tao"]
QUOTE_FILES = ["startrek", "humorists", "pratchett", "computers", "platitudes", "goedel"]
LANG_DIRS = {"de": ["de"], "fr": ["fr"], "es": ["es"], "it": ["it"]}
# Where a language has no fortunes (French in Debian 12): the translated messages of these
# programs (coreutils' and bash's --help texts are paragraphs of prose).
GETTEXT_DOMAINS = ["coreutils", "bash", "grep", "findutils", "diffutils", "tar", "sed", "dpkg"]
TECH_DOCS = ["/usr/share/doc/bash/README.gz", "/usr/share/doc/bash/INTRO.gz",
             "/usr/share/doc/bash/POSIX.gz", "/usr/share/doc/bash/COMPAT.gz",
             "/usr/share/doc/coreutils/README.gz", "/usr/share/doc/gzip/README.gz",
             "/usr/share/doc/dpkg/README.api", "/usr/share/doc/libjansson4/README.rst",
             "/usr/share/doc/libopenblas-dev/USAGE.md.gz",
             "/usr/share/doc/libopenblas-dev/README.md.gz",
             "/usr/share/doc/libzstd-dev/examples/README.md", "/usr/share/doc/zstd/README.md.gz"]
C_FILES = sorted(glob.glob("/usr/share/doc/libzstd-dev/examples/*.c")) + [
    "/usr/include/jansson.h", "/usr/include/pcre2.h", "/usr/include/archive.h",
    "/usr/include/zstd.h", "/usr/include/zlib.h"]
PY_DIR = (sorted(glob.glob("/usr/lib/python3.[0-9]*/")) or ["/usr/lib/python3/"])[0]
PY_FILES = [PY_DIR + f for f in ["textwrap.py", "shlex.py", "fnmatch.py", "bisect.py",
                                 "heapq.py", "csv.py", "base64.py", "glob.py", "difflib.py",
                                 "calendar.py", "statistics.py", "string.py", "tarfile.py"]]
SH_FILES = ["/usr/bin/" + f for f in ["zgrep", "zdiff", "zmore", "zless", "znew", "zforce",
                                      "gzexe", "xzdiff", "xzgrep", "xzless", "xzmore",
                                      "zstdgrep", "zstdless", "which", "ldd"]]
LICENSES = "/usr/share/common-licenses"
LICENSE_FILES = ["Apache-2.0", "GPL-2", "GPL-3", "LGPL-2.1", "MPL-2.0", "BSD", "Artistic",
                 "CC0-1.0"]

# Common words per language, for guessing the language of a held-out line.
STOPWORDS = {
    "en": "the and of to is that it in you for was with not this are be have".split(),
    "de": "der die und das ist nicht ein eine ich zu den mit sie es auf sich".split(),
    "fr": "le la les et est un une des que pas pour dans qui il ce vous".split(),
    "es": "el la los las y es un una que no por en del se para con".split(),
    "it": "il la le e di che non un una per sono gli del della con si".split(),
}


def read_text(path):
    """The text of a file (gunzipped when .gz), UTF-8 or else Latin-1; None when missing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def fortunes(path):
    """The entries of one fortune file (split on lines holding only %), stripped."""
    t = read_text(path)
    if t is None:
        return []
    return [e.strip("\n") for e in re.split(r"\n%\n", t.replace("\r", "")) if e.strip()]


def gettext_messages(lang):
    """The translated messages of 200 bytes or more (mostly --help texts) in the gettext
    catalogs of GETTEXT_DOMAINS for lang, by domain and msgid."""
    out = []
    for dom in GETTEXT_DOMAINS:
        p = f"/usr/share/locale/{lang}/LC_MESSAGES/{dom}.mo"
        try:
            with open(p, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except OSError:
            continue
        for k in sorted(cat, key=str):
            v = cat[k]
            if isinstance(k, str) and k and size(v) >= MIN_BYTES:
                out.append(("gettext:" + dom, v.strip("\n")))
    return out


def lang_fortunes(lang):
    """Every entry of every fortune file of one language directory, files in sorted order;
    Debian 12 has no French fortunes, so French comes from gettext catalogs instead."""
    if not any(os.path.isdir(os.path.join(FORTUNES, d)) for d in LANG_DIRS[lang]):
        return gettext_messages(lang)
    out = []
    for d in LANG_DIRS[lang]:
        for p in sorted(glob.glob(os.path.join(FORTUNES, d, "*"))):
            base = os.path.basename(p)
            if base.endswith((".dat", ".u8", "-pre")) or base == "off" or os.path.isdir(p):
                continue
            out += [(os.path.relpath(p, FORTUNES), e) for e in fortunes(p)]
    return out


def clip(text, limit=MAX_BYTES):
    """text cut to at most limit UTF-8 bytes, at a line end or else a space when there is one."""
    b = text.encode("utf-8")
    if len(b) <= limit:
        return text
    t = b[:limit].decode("utf-8", "ignore")
    for sep in ("\n", " "):
        i = t.rfind(sep)
        if i > limit // 2:
            return t[:i]
    return t


def size(text):
    return len(text.encode("utf-8"))


def join_entries(rng, entries, min_bytes=MIN_BYTES):
    """One document from entries [(source, text)]: mostly one entry of min_bytes or more, else
    consecutive entries from a random start joined by blank lines until min_bytes. Returns
    (source, text) or None."""
    if not entries:
        return None
    longs = [e for e in entries if size(e[1]) >= min_bytes]
    if longs and rng.random() < 0.75:
        src, text = rng.choice(longs)
        return src, clip(text)
    i = rng.randrange(len(entries))
    src, text = entries[i]
    j = i + 1
    while size(text) < min_bytes and j < len(entries) and j - i < 12:
        text += "\n\n" + entries[j][1]
        j += 1
    if size(text) < min_bytes:
        return None
    return src, clip(text)


def line_slices(rng, path, n, kind_re=None):
    """n slices of a text file, each starting at a random line (one matching kind_re when
    given) and running whole lines to a random target length in [MIN_BYTES, MAX_BYTES]."""
    text = read_text(path)
    if not text:
        return []
    lines = text.replace("\r", "").split("\n")
    starts = [i for i, l in enumerate(lines) if (kind_re.match(l) if kind_re else l.strip())]
    out = []
    for _ in range(n):
        if not starts:
            break
        i = rng.choice(starts)
        target = rng.randint(MIN_BYTES + 100, 1800)
        acc = []
        while i < len(lines) and size("\n".join(acc)) < target:
            acc.append(lines[i])
            i += 1
        doc = clip("\n".join(acc).strip("\n") + "\n")
        if size(doc) >= MIN_BYTES:
            out.append(doc)
    return out


def guess_lang(text):
    words = re.findall(r"[a-zà-ÿß]+", text.lower())
    scores = {k: sum(w in set(v) for w in words) for k, v in STOPWORDS.items()}
    best = max(sorted(scores), key=lambda k: scores[k])
    return best if scores[best] >= 3 else "en"


# The held-out file's sources (the demo model's training set, /work/demo-text) and their kinds;
# a line of another source gets its kind from its look (guess_lang, prose_kind).
HELDOUT_KINDS = {"kjv": "prose-narrative", "fortune-en": "prose-quotes",
                 "man": "prose-technical", "usr-share-doc": "prose-technical",
                 "python-doc": "prose-technical", "debian-reference": "prose-technical",
                 "fortune-de": "lang-de"}


def prose_kind(text):
    """narrative, quotes or technical, from the look of an English text."""
    quotes = len(re.findall(r"[\"“”]", text)) + 2 * len(re.findall(r"^\s*[A-Z][\w .]{0,20}:",
                                                                     text, re.M))
    tech = len(re.findall(r"[{}<>/=_]|\b(file|option|command|function|default|install)\b",
                          text))
    if quotes >= 6:
        return "quotes"
    if tech * 40 > size(text):
        return "technical"
    return "narrative"


# --------------------------------------------------------------------------------------------
# the kinds


def prose_from_heldout(rng, path, per_kind, per_lang):
    """Up to per_kind documents of each English prose kind and per_lang of each language from
    the held-out file, each its line's text cut to MAX_BYTES; and the kinds it gave."""
    docs = []
    buckets = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except ValueError:
                continue
            text = o.get("text")
            if not isinstance(text, str) or size(text.strip()) < MIN_BYTES:
                continue
            text = clip(text.strip("\n") + "\n")
            src = str(o.get("source", "heldout"))
            kind = HELDOUT_KINDS.get(src)
            if kind is None:
                lang = guess_lang(text)
                kind = "prose-" + prose_kind(text) if lang == "en" else "lang-" + lang
            if "id" in o:
                src += ":" + str(o["id"])
            buckets.setdefault(kind, []).append((src, text))
    for kind in sorted(buckets):
        want = per_lang if kind.startswith("lang-") else per_kind
        items = buckets[kind]
        for src, text in rng.sample(items, min(want, len(items))):
            docs.append((kind, "heldout:" + src, text))
    return docs, sorted(buckets)


def prose_from_fortunes(rng, per_kind, kinds):
    docs = []
    for kind, files in (("narrative", NARRATIVE_FILES), ("quotes", QUOTE_FILES)):
        if "prose-" + kind not in kinds:
            continue
        entries = []
        for f in files:
            entries += [(f, e) for e in fortunes(os.path.join(FORTUNES, f))]
        seen = set()
        for _ in range(per_kind * 4):
            if len([d for d in docs if d[0] == "prose-" + kind]) >= per_kind:
                break
            d = join_entries(rng, entries)
            if d and d[1] not in seen:
                seen.add(d[1])
                docs.append(("prose-" + kind, "fortunes:" + d[0], d[1] + "\n"))
    return docs


def tech_docs(rng, n):
    docs = []
    files = [p for p in TECH_DOCS if os.path.exists(p)]
    for i in range(n):
        p = files[i % len(files)]
        for d in line_slices(rng, p, 1, re.compile(r"^[A-Za-z]")):
            docs.append(("prose-technical", p, d))
    return docs


def other_languages(rng, per_lang, kinds):
    docs = []
    for lang in sorted(LANG_DIRS):
        if "lang-" + lang not in kinds:
            continue
        entries = lang_fortunes(lang)
        seen = set()
        for _ in range(per_lang * 4):
            if len([d for d in docs if d[0] == "lang-" + lang]) >= per_lang:
                break
            d = join_entries(rng, entries)
            if d and d[1] not in seen:
                seen.add(d[1])
                docs.append(("lang-" + lang, "fortunes:" + d[0], d[1] + "\n"))
    return docs


def code(rng, per_lang):
    docs = []
    for kind, files, start in (
            ("code-c", C_FILES, re.compile(r"^(/\*|#include|#define|static|int|void|typedef)")),
            ("code-python", PY_FILES, re.compile(r"^(def |class |import |from |@)")),
            ("code-shell", SH_FILES, re.compile(r"^(#|[a-z_]+\(\)|case|if|for|while|[a-z_]+=)"))):
        files = [p for p in files if os.path.exists(p)]
        for i in range(per_lang):
            if not files:
                break
            p = files[i % len(files)]
            for d in line_slices(rng, p, 1, start):
                docs.append((kind, p, d))
    return docs


SITES = ["Northwind Gazette", "Example Hardware Store", "Riverbank Library", "Open Recipes",
         "Lakeside Rowing Club", "Metro Transit Authority", "Bluebird Books", "City Museum"]
NAV = ["Home", "About us", "Contact", "Blog", "Shop", "Careers", "Press", "Help", "FAQ",
       "Privacy", "Terms", "Sitemap", "Log in", "Register", "Cart", "Newsletter", "Events",
       "Accessibility", "Imprint", "Support", "Downloads", "Community", "Partners"]
COOKIE = [
    "We use cookies and similar technologies to provide the services on {site}, to measure "
    "traffic and to personalise content. By clicking \"Accept all\" you consent to the use of "
    "all cookies. You can change your choice at any time under \"Cookie settings\" at the "
    "bottom of every page. Some cookies are strictly necessary for the site to work and "
    "cannot be switched off.",
    "This website stores data such as cookies to enable essential site functionality, as well "
    "as marketing, personalization and analytics. You may change your settings at any time or "
    "accept the default settings. Read our Privacy Policy to learn more about how {site} "
    "processes personal data.",
    "Your privacy matters to {site}. We and our {n} partners store and access information on "
    "your device, such as unique identifiers in cookies, to process personal data. You may "
    "accept or manage your choices by clicking below, including your right to object where "
    "legitimate interest is used.",
]
LEGAL = [
    "Copyright (c) {year} {site}. All rights reserved. No part of this publication may be "
    "reproduced, distributed, or transmitted in any form or by any means without the prior "
    "written permission of the publisher, except in the case of brief quotations embodied in "
    "critical reviews.",
    "The information on this page is provided \"as is\" without warranty of any kind, express "
    "or implied. {site} shall not be liable for any damages arising out of the use of this "
    "information. Prices and availability are subject to change without notice.",
    "This e-mail and any attachments are confidential and intended solely for the addressee. "
    "If you have received this message in error, please notify the sender immediately and "
    "delete it from your system. Any unauthorised use, disclosure or copying is prohibited.",
]


def boilerplate(rng, n):
    docs = []
    lic = [(f, read_text(os.path.join(LICENSES, f))) for f in LICENSE_FILES]
    lic = [(f, t) for f, t in lic if t]
    for i in range(n):
        k = i % 4
        if k == 0 and lic:  # the start of a licence text
            f, t = lic[(i // 4) % len(lic)]
            docs.append(("boilerplate-licence", LICENSES + "/" + f,
                         clip(t.strip() + "\n", rng.randint(600, MAX_BYTES))))
        elif k == 1 and lic:  # a slice of a licence
            f, t = lic[(i // 4 + 3) % len(lic)]
            lines = t.split("\n")
            s = rng.randrange(len(lines) // 2 + 1)
            d = clip("\n".join(lines[s:s + rng.randint(12, 40)]).strip() + "\n")
            if size(d) >= MIN_BYTES:
                docs.append(("boilerplate-licence", LICENSES + "/" + f, d))
        elif k == 2:  # cookie banner + legal notice
            site = rng.choice(SITES)
            parts = [rng.choice(COOKIE), rng.choice(LEGAL)]
            rng.shuffle(parts)
            d = "\n\n".join(p.format(site=site, n=rng.randint(40, 900),
                                     year=rng.randint(2003, 2024)) for p in parts)
            docs.append(("boilerplate-notice", "template", d + "\n\nAccept all | Reject all | "
                         "Cookie settings\n"))
        else:  # navigation text
            site = rng.choice(SITES)
            menu = rng.sample(NAV, rng.randint(8, 16))
            crumbs = " > ".join(["Home"] + rng.sample(NAV[4:], 3))
            foot = " | ".join(rng.sample(NAV, 7))
            d = (f"{site}\nSkip to main content\n" + "\n".join(menu) + f"\n\nYou are here: "
                 f"{crumbs}\n\nPage {rng.randint(1, 9)} of {rng.randint(10, 40)}   "
                 f"« Previous   Next »\n\n{foot}\n© {rng.randint(2003, 2024)} {site}. "
                 "All rights reserved.\n")
            docs.append(("boilerplate-navigation", "template", d))
    return docs


def garbage(rng, n):
    """(kind, source, bytes-or-text) documents; random bytes only go to the archive."""
    docs = []
    rows = ["qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890"]
    for i in range(n):
        k = i % 5
        ln = rng.randint(MIN_BYTES, 2000)
        if k == 0:
            docs.append(("garbage-bytes", "random", bytes(rng.randrange(256) for _ in range(ln))))
        elif k == 1:
            raw = bytes(rng.randrange(256) for _ in range(ln * 3 // 4))
            b = base64.b64encode(raw).decode()
            docs.append(("garbage-base64", "random",
                         "\n".join(b[j:j + 76] for j in range(0, len(b), 76)) + "\n"))
        elif k == 2:
            out = []
            while sum(map(len, out)) < ln:
                r = rng.choice(rows)
                a = rng.randrange(len(r))
                out.append("".join(rng.choice(r[max(0, a - 2):a + 3]) for _ in
                                   range(rng.randint(3, 14))))
            docs.append(("garbage-mash", "random", " ".join(out) + "\n"))
        elif k == 3:
            c = rng.choice("a=-*.!x#~0 ")
            docs.append(("garbage-repeat", "random",
                         "\n".join(c * rng.randint(20, 120) for _ in range(ln // 60 + 2)) +
                         "\n"))
        else:
            raw = bytes(rng.randrange(256) for _ in range(ln // 4))
            lines = [f"{j:08x}  " + " ".join(f"{x:02x}" for x in raw[j:j + 16])
                     for j in range(0, len(raw), 16)]
            docs.append(("garbage-hexdump", "random", "\n".join(lines) + "\n"))
    return docs


# --------------------------------------------------------------------------------------------
# writing


def to_bytes(d):
    return d if isinstance(d, bytes) else d.encode("utf-8")


def write_tar_gz(path, entries):
    """entries: [(name, bytes)] in the order given (the caller sorts), fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            tar.addfile(ti, io.BytesIO(data))
    with open(path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heldout", help="JSON Lines {source, text} for prose and other languages")
    ap.add_argument("--out", default="jobs/demo", help="folder for corpus.tar.gz, corpus.jsonl")
    ap.add_argument("--seed", type=int, default=12)
    a = ap.parse_args()
    rng = random.Random(a.seed)

    # Prose and other languages: from the held-out file where it has the kind, else from the
    # fortunes (and READMEs, gettext catalogs).
    docs, held = [], []
    if a.heldout:
        docs, held = prose_from_heldout(rng, a.heldout, per_kind=40, per_lang=15)
    want = ["prose-narrative", "prose-quotes", "prose-technical"] + [
        "lang-" + k for k in sorted(LANG_DIRS)]
    rest = [k for k in want if k not in held]
    docs += prose_from_fortunes(rng, 40, rest)
    docs += other_languages(rng, 15, rest)
    if "prose-technical" in rest:
        docs += tech_docs(rng, 30)
    prose_from = ("held-out file: " + ", ".join(held) + "; " if held else "") + \
        "Debian files: " + ", ".join(rest)
    docs += code(rng, 20)
    docs += boilerplate(rng, 32)
    docs += garbage(rng, 30)

    # Half of each kind to the archive, half to the JSON Lines file; random bytes (not valid
    # UTF-8, so not a JSON string) all go to the archive.
    tar_entries, jsonl_rows = [], []
    count = {}
    for kind, src, text in docs:
        count[kind] = count.get(kind, 0) + 1
        i = count[kind]
        name = f"{kind}-{i:03d}"
        if isinstance(text, bytes) or i % 2:
            tar_entries.append((f"{kind.split('-')[0]}/{name}.txt", to_bytes(text)))
        else:
            jsonl_rows.append({"id": name, "kind": kind, "source": src, "text": text})

    # What lands but is odd: an empty document.
    tar_entries.append(("edge/empty-document.txt", b""))
    # Broken archive entries: one over max_entry_bytes, one repeating an earlier entry's name.
    long_text = ("This line repeats to make a document over the job's max_entry_bytes. " *
                 (MAX_ENTRY_BYTES // 60 + 20)).encode()
    tar_entries.append(("broken/over-max-entry-bytes.txt", long_text))
    tar_entries.sort()
    dup = tar_entries[0]
    tar_entries.insert(1, (dup[0], b"A second entry with the same name fails its own row.\n"))

    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in jsonl_rows]
    # Broken JSON Lines: each fails its own row, and the lines after them still land.
    broken = [
        '{"id": "broken-not-json", "text": "this line is cut short',
        json.dumps({"id": "broken-no-text", "kind": "broken", "body": "the text field is "
                    "missing: the job reads `text`"}, sort_keys=True),
        json.dumps({"id": "broken-over-long", "kind": "broken",
                    "text": long_text.decode()}, sort_keys=True),
        json.dumps({"id": lines and jsonl_rows[0]["id"], "kind": "broken",
                    "text": "a second line with an id seen before fails its own row"},
                   sort_keys=True),
    ]
    for k, b in enumerate(broken):
        lines.insert((k + 1) * len(lines) // (len(broken) + 1), b)

    os.makedirs(a.out, exist_ok=True)
    write_tar_gz(os.path.join(a.out, "corpus.tar.gz"), tar_entries)
    with open(os.path.join(a.out, "corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")

    kinds = {}
    for kind, _, _ in docs:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(tar_entries)} archive entries, {len(lines)} JSON lines "
          f"({len(docs)} documents + 1 empty + {2 + len(broken)} broken); {prose_from}", file=sys.stderr)
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), file=sys.stderr)


if __name__ == "__main__":
    main()
