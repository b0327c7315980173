#!/usr/bin/env python3
"""Gather the demo model's training text from Debian packages, split it, train its tokenizer.

    python3 tools/demo_text.py OUTDIR [--tokenizer-from tests/fixtures/tokenizer/tokenizer.json]

Step 1 of 2 (step 2, tools/train_demo_model.py, trains the model on a GPU machine or a CPU).
Runs on a Debian 12 machine with these packages installed (all in Debian main, freely licensed):
    manpages manpages-dev (and every other page already under /usr/share/man), bible-kjv,
    fortunes fortunes-min fortunes-de fortunes-es fortunes-it, python3-doc, debian-reference-en,
    doc-debian, debian-policy, plus the plain-text files under /usr/share/doc.

Writes into OUTDIR:
    docs.jsonl      every document kept, {"id", "source", "split", "text"}, sorted by id
    heldout.jsonl   the held-out split (about 3%, chosen by a hash of the id: stable when the
                    set of packages changes), never trained on
    tokenizer.json  the Falcon tokenizer's pipeline (normalizer, pre-tokenizer, decoder, the 12
                    specials at ids 0..11) with a byte-level BPE vocabulary of --vocab entries
                    trained by HF tokenizers on the training split
    train.bin, heldout.bin
                    uint16 token ids, each document preceded by <|endoftext|> (id 11), the
                    context fmbatch scores a document's first token in
    stats.json      counts per source and split, bytes, tokens

Deterministic: file lists are sorted, the split is a hash, duplicates are dropped by the hash
of their whitespace-normalised text (first occurrence in id order wins), and paragraphs that
occur more than 3 times in the whole corpus (licence texts, boilerplate) are kept only at
their first 3 occurrences.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

SPECIALS = [">>TITLE<<", ">>ABSTRACT<<", ">>INTRODUCTION<<", ">>SUMMARY<<", ">>COMMENT<<",
            ">>ANSWER<<", ">>QUESTION<<", ">>DOMAIN<<", ">>PREFIX<<", ">>SUFFIX<<",
            ">>MIDDLE<<", "<|endoftext|>"]
EOS = 11
HELDOUT_PERCENT = 3
MAX_DOC_BYTES = 12000  # longer texts are cut into pieces at paragraph boundaries


def is_heldout(doc_id):
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "little")
    return h % 100 < HELDOUT_PERCENT


def norm_ws(s):
    return re.sub(r"\s+", " ", s).strip()


def clean(s):
    s = s.replace("\r\n", "\n").replace("\t", "    ")
    s = re.sub(r"[ \u00a0]+\n", "\n", s)
    s = re.sub(r"\n{3,}", "\n\n", s)
    return s.strip() + "\n"


def pieces(text, limit=MAX_DOC_BYTES):
    """Cut text into pieces of at most ~limit bytes at paragraph boundaries."""
    if len(text.encode()) <= limit:
        return [text]
    out, cur, n = [], [], 0
    for para in text.split("\n\n"):
        b = len(para.encode()) + 2
        if cur and n + b > limit:
            out.append("\n\n".join(cur).strip() + "\n")
            cur, n = [], 0
        cur.append(para)
        n += b
    if cur:
        out.append("\n\n".join(cur).strip() + "\n")
    return out


class Text(html.parser.HTMLParser):
    """HTML to plain text: drops script/style/navigation, keeps paragraph breaks."""
    SKIP = {"script", "style", "head", "nav"}
    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "li", "pre", "dt", "dd", "tr", "br",
             "section", "table", "blockquote"}

    def __init__(self):
        super().__init__()
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n\n")
        a = dict(attrs)
        if a.get("class") and "sphinxsidebar" in a.get("class", ""):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        elif tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)

    def text(self):
        s = "".join(self.out)
        paras = [norm_ws(p) for p in re.split(r"\n\s*\n", s)]
        return "\n\n".join(p for p in paras if len(p) > 1)


def html_text(path):
    p = Text()
    with open(path, encoding="utf-8", errors="replace") as f:
        p.feed(f.read())
    return p.text()


def read_maybe_gz(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        return f.read(400000)


def gather_kjv():
    out = subprocess.run(["bible", "-m", "8192", "Gen1:1-Rev22:21"], capture_output=True,
                         check=True).stdout.decode("utf-8", "replace")
    # Chapters start with a line "Genesis 1"; verses are "  N text" lines.
    docs, cur, title = [], [], None
    for line in out.split("\n"):
        m = re.match(r"^([1-3]?\s?[A-Z][A-Za-z ]+) (\d+)$", line.strip())
        if m and not line.startswith(" "):
            if cur and title:
                docs.append((title, cur))
            title, cur = line.strip(), []
            continue
        v = re.match(r"^\s*\d+\s+(.*)$", line)
        if v:
            cur.append(v.group(1))
        elif line.strip() and cur:
            cur[-1] += " " + line.strip()
    if cur and title:
        docs.append((title, cur))
    for title, verses in docs:
        yield "kjv/" + title.replace(" ", "_"), "kjv", title + "\n\n" + " ".join(verses)


def render_man(path):
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", MAN_KEEP_FORMATTING="")
    try:
        r = subprocess.run(["man", "--nj", "--nh", "-l", path], capture_output=True, env=env,
                           timeout=20)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    t = r.stdout.decode("utf-8", "replace")
    t = re.sub(r".\x08", "", t)  # overstrike
    return t


def gather_man(limit_per_section):
    for sec in ["1", "3", "5", "7", "8"]:
        files = sorted(glob.glob("/usr/share/man/man%s/*.gz" % sec))
        # Real pages only: .so links render as another page (a duplicate).
        files = [f for f in files if os.path.getsize(f) > 600][:limit_per_section]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            for f, t in zip(files, ex.map(render_man, files)):
                if t:
                    yield "man/" + sec + "/" + os.path.basename(f)[:-3], "man", t


def gather_html(root, source, prefix):
    for f in sorted(glob.glob(os.path.join(root, "**", "*.html"), recursive=True)):
        rel = os.path.relpath(f, root)
        if rel.startswith(("genindex", "_", "search", "py-modindex")):
            continue
        t = html_text(f)
        if t:
            yield prefix + rel, source, t


def gather_fortunes():
    base = "/usr/share/games/fortunes"
    langs = [("", "fortune-en"), ("de", "fortune-de"), ("es", "fortune-es"),
             ("it", "fortune-it")]
    for sub, source in langs:
        d = os.path.join(base, sub) if sub else base
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            if not os.path.isfile(p) or "." in f:
                continue
            raw = open(p, "rb").read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            cookies = [c.strip("\n") for c in text.split("\n%\n") if c.strip()]
            # Groups of 12 cookies make one document.
            for i in range(0, len(cookies), 12):
                yield "%s/%s/%05d" % (source, f, i // 12), source, "\n\n".join(cookies[i:i + 12])


def gather_usr_share_doc():
    names = re.compile(r"(^README|^NEWS|^FAQ|^TODO|^AUTHORS|^THANKS|\.txt$|\.md$|\.rst$|"
                       r"^COPYING$)", re.I)
    for root, dirs, files in os.walk("/usr/share/doc"):
        dirs.sort()
        if "/html" in root or "python3.11" in root or "debian-reference" in root:
            continue
        for f in sorted(files):
            base = f[:-3] if f.endswith(".gz") else f
            if not names.search(base):
                continue
            p = os.path.join(root, f)
            if os.path.islink(p):
                continue
            raw = read_maybe_gz(p)
            if b"\0" in raw:
                continue
            yield "doc/" + os.path.relpath(p, "/usr/share/doc"), "usr-share-doc", \
                raw.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--tokenizer-from", default="tests/fixtures/tokenizer/tokenizer.json",
                    help="a tokenizer.json with the Falcon pipeline (its vocabulary is not used)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--man-per-section", type=int, default=1200)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)

    gens = [gather_kjv(), gather_fortunes(),
            gather_html("/usr/share/doc/python3.11/html", "python-doc", "pydoc/"),
            gather_html("/usr/share/debian-reference", "debian-reference", "debref/"),
            gather_usr_share_doc(), gather_man(a.man_per_section)]
    docs = []
    for g in gens:
        for doc_id, source, text in g:
            text = clean(text)
            if len(text) < 80:
                continue
            parts = pieces(text)
            for i, t in enumerate(parts):
                docs.append((doc_id if len(parts) == 1 else "%s#%d" % (doc_id, i), source, t))
        print("gathered %d documents" % len(docs), file=sys.stderr)
    docs.sort()

    # Dedupe: whole documents, then paragraphs seen more than 3 times.
    seen, kept = set(), []
    for doc_id, source, text in docs:
        h = hashlib.sha256(norm_ws(text).encode()).digest()
        if h in seen:
            continue
        seen.add(h)
        kept.append([doc_id, source, text])
    para_count = collections.Counter()
    final = []
    for doc_id, source, text in kept:
        out = []
        for para in text.split("\n\n"):
            k = hashlib.sha256(norm_ws(para).encode()).digest()
            para_count[k] += 1
            if para_count[k] <= 3 or len(para) < 40:
                out.append(para)
        text = "\n\n".join(out).strip() + "\n"
        if len(text) >= 80:
            final.append((doc_id, source, text))

    stats = collections.defaultdict(lambda: {"docs": 0, "bytes": 0, "tokens": 0})
    with open(os.path.join(a.outdir, "docs.jsonl"), "w") as fa, \
            open(os.path.join(a.outdir, "heldout.jsonl"), "w") as fh:
        for doc_id, source, text in final:
            split = "heldout" if is_heldout(doc_id) else "train"
            rec = json.dumps({"id": doc_id, "source": source, "split": split, "text": text},
                             ensure_ascii=False)
            fa.write(rec + "\n")
            if split == "heldout":
                fh.write(rec + "\n")

    from tokenizers import Tokenizer, models, trainers, pre_tokenizers

    ref = json.load(open(a.tokenizer_from))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(pattern=r"[0-9][0-9][0-9]", behavior="isolated"),
    ])
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    train_texts = [t for i, s, t in final if not is_heldout(i)]
    tok.train_from_iterator(train_texts, trainer=trainer)
    trained = json.loads(tok.to_str())
    # The Falcon pipeline, verbatim from the reference file; only the vocabulary is ours.
    out = {k: ref[k] for k in ["version", "truncation", "padding", "normalizer", "pre_tokenizer",
                               "post_processor", "decoder"]}
    out["added_tokens"] = ref["added_tokens"][:len(SPECIALS)]
    for i, s in enumerate(SPECIALS):
        assert out["added_tokens"][i]["content"] == s and trained["model"]["vocab"][s] == i
    out["model"] = dict(ref["model"])
    out["model"]["vocab"] = trained["model"]["vocab"]
    out["model"]["merges"] = trained["model"]["merges"]
    with open(os.path.join(a.outdir, "tokenizer.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    tok = Tokenizer.from_file(os.path.join(a.outdir, "tokenizer.json"))
    assert tok.pre_tokenizer.__getstate__() is not None

    import array
    bins = {"train": array.array("H"), "heldout": array.array("H")}
    enc = tok.encode_batch([t for _, _, t in final], add_special_tokens=False)
    for (doc_id, source, text), e in zip(final, enc):
        split = "heldout" if is_heldout(doc_id) else "train"
        bins[split].append(EOS)
        bins[split].extend(e.ids)
        st = stats["%s/%s" % (source, split)]
        st["docs"] += 1
        st["bytes"] += len(text.encode())
        st["tokens"] += len(e.ids) + 1
    for split, arr in bins.items():
        with open(os.path.join(a.outdir, split + ".bin"), "wb") as f:
            arr.tofile(f)
    with open(os.path.join(a.outdir, "stats.json"), "w") as f:
        json.dump(dict(sorted(stats.items())), f, indent=1)
    tot = {s: len(b) for s, b in bins.items()}
    print(json.dumps({"tokens": tot, "docs": len(final)}), file=sys.stderr)


if __name__ == "__main__":
    main()
