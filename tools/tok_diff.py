#!/usr/bin/env python3
"""Differential test: fmbatch's tokenizer against HF tokenizers on random inputs.

Generates N random inputs from a seed (random code points from several planes, the code points
where Unicode versions disagree, random bytes, mixes of digits / punctuation / whitespace /
special tokens, real vocab pieces, long runs), encodes them with HF tokenizers (special tokens on
and off: encode_special_tokens) and with `fmbatch tokenize --hex-lines`, and compares ids. Then
decodes random id sequences both ways (`fmbatch detokenize --json-lines`).

Prints PASS/FAIL lines and a NOTE with the seed (tests/run.sh format). If HF tokenizers cannot be
imported this is a FAIL, never a skip.

  python3 tools/tok_diff.py --fmbatch build/fmbatch [--n 5000] [--seed S] [--tokenizer F]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

SPECIAL_BITS = [">>TITLE<<", ">>ABSTRACT<<", "<|endoftext|>", ">>SUFFIX<<", ">>", "<<", "<|", "|>",
                "endoftext", ">>TITLE", "TITLE<<", "<|endoftext|", "'s", "'t", "'re", "'ve", "'m",
                "'ll", "'d", "'"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["¿", "¡", "«", "»", "—", "–", "…", "·", "、",
                                                       "。", "，", "！", "・", "€", "©", "±", "°",
                                                       "\u2e43", "\u166d", "\u061d", "\u2e5d"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u180e", "\u0085",
          "\u2028", "\u000b", "\u000c", " \n ", "\n\n"]
DIGITS = list("0123456789") + ["²", "³", "¹", "¼", "½", "¾", "٣", "९", "Ⅻ", "①", "１２３"]
WORDS = ["Hello", "world", "the", "Привет", "как", "дела", "中文", "分词", "שלום", "नमस्ते",
         "emoji😀", "naïve", "Straße", "東京", "ﬁ", "x²", "über", "σς", "ǅ", "İstanbul"]
# Code points where HF's Unicode tables (Oniguruma 16 / Rust / unicode_categories) and PCRE2's
# disagree, plus their neighbours (see engine/tok_unicode.h).
UNI_EDGE = [0x1C89, 0x1C8A, 0xA7CB, 0xA7CD, 0xA7DC, 0x105C0, 0x10D4A, 0x10D40, 0x116D0, 0x11BF0,
            0x1CCF0, 0x11DE0, 0x16FF4, 0x180E, 0x166D, 0x111C9, 0x61D, 0x9FD, 0xA76, 0x2E43, 0x2E4F,
            0x2E52, 0x2E5D, 0x10EAD, 0x1B7D, 0x1E5FF, 0x11F43, 0x16FE2, 0x1DAEC, 0x2E42, 0x1F600]
PLANES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
          (0x1000, 0x1FFF), (0x2000, 0x2E7F), (0x3000, 0x9FFF), (0xA000, 0xD7FF), (0xE000, 0xFFFD),
          (0x10000, 0x1FFFF), (0x20000, 0x2FFFF), (0x30000, 0x3134F), (0xE0000, 0xE01EF),
          (0xF0000, 0x10FFFF), (0x0, 0x1F)]


def make_variant(base_path, name):
    """A variant of the tokenizer.json that exercises the generic machinery (written to a temp
    file): added-token flags and a TemplateProcessing, other split behaviours, invert, empty
    regex matches, String patterns, stages after ByteLevel, Digits before it."""
    import copy
    import tempfile
    t = json.load(open(base_path))
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pts = t["pre_tokenizer"]["pretokenizers"]
    if name == "flags":
        at = t["added_tokens"]
        at[0]["lstrip"] = True
        at[1]["rstrip"] = True
        at[2]["single_word"] = True
        at[3]["normalized"] = True
        at[4]["lstrip"] = at[4]["rstrip"] = True
        at[11]["special"] = False
        t["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": ">>TITLE<<", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                ">>TITLE<<": {"id": ">>TITLE<<", "ids": [0], "tokens": [">>TITLE<<"]},
                "<|endoftext|>": {"id": "<|endoftext|>", "ids": [11], "tokens": ["<|endoftext|>"]}}}
    elif name == "behaviors":
        pts[:] = [{"type": "Punctuation", "behavior": "MergedWithNext"},
                  {"type": "Split", "pattern": {"Regex": "x*|[0-9]{2}"}, "behavior": "MergedWithPrevious",
                   "invert": False},
                  {"type": "Digits", "individual_digits": False}, bl,
                  {"type": "Split", "pattern": {"Regex": "[0-9]{2}|(?=a)"}, "behavior": "Contiguous",
                   "invert": True},
                  {"type": "Digits", "individual_digits": True}]
    elif name == "strings":
        pts[:] = [bl, {"type": "Split", "pattern": {"String": "Ġ"}, "behavior": "Removed", "invert": False},
                  {"type": "Punctuation", "behavior": "MergedWithPrevious"},
                  {"type": "Split", "pattern": {"String": "e"}, "behavior": "MergedWithNext", "invert": False}]
    else:
        raise ValueError("unknown variant " + name)
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(t, f)
    return path


def rand_cp(r):
    lo, hi = r.choice(PLANES)
    while True:
        c = r.randint(lo, hi)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def gen_input(r, vocab_pieces):
    """Returns bytes."""
    kind = r.randrange(10)
    if kind == 0:  # random bytes
        return bytes(r.randrange(256) for _ in range(r.randint(0, 40)))
    if kind == 1:  # random bytes biased to UTF-8 lead/continuation bytes
        pool = [0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x80, 0xBF, 0xA0, 0x9F, 0x8F,
                0x90, 0xC0, 0xC1, 0x41, 0x20]
        return bytes(r.choice(pool) for _ in range(r.randint(1, 30)))
    if kind == 2:  # random code points from several planes
        return "".join(rand_cp(r) for _ in range(r.randint(1, 40))).encode()
    if kind == 3:  # long runs: BPE heap path, long whitespace, long digit runs
        unit = r.choice(["a", "ab", "в", "ё", "中", " ", "\t", "1", "12", "-", "=", "!?", "'s",
                         "Ā", "😀", r.choice(WORDS), r.choice(vocab_pieces)])
        return (unit * r.randint(20, 400)).encode()
    # mixes
    parts = []
    for _ in range(r.randint(1, 25)):
        k = r.randrange(9)
        if k == 0:
            parts.append(r.choice(SPECIAL_BITS))
        elif k == 1:
            parts.append(r.choice(PUNCT) * r.randint(1, 3))
        elif k == 2:
            parts.append(r.choice(SPACES))
        elif k == 3:
            parts.append("".join(r.choice(DIGITS) for _ in range(r.randint(1, 12))))
        elif k == 4:
            parts.append(r.choice(WORDS))
        elif k == 5:
            parts.append(chr(r.choice(UNI_EDGE) + r.randint(-1, 1)))
        elif k == 6:
            parts.append(rand_cp(r))
        else:
            parts.append(r.choice(vocab_pieces))
    return "".join(parts).encode()


def run_fmbatch(args, stdin):
    res = subprocess.run(args, input=stdin, capture_output=True)
    if res.returncode:
        raise RuntimeError("%s exited %d: %s" % (" ".join(args), res.returncode,
                                                  res.stderr.decode(errors="replace")[:500]))
    out = res.stdout.decode().split("\n")  # not splitlines(): U+2028 may be in a string
    return out[:-1] if out and out[-1] == "" else out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmbatch", default=os.environ.get("FMBATCH", "build/fmbatch"))
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer/tokenizer.json")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--tag", default="", help="suffix for the check names")
    ap.add_argument("--variant", default=None, help="flags | behaviors | strings (see make_variant)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int(os.environ.get("TOK_DIFF_SEED", time.time_ns() % 2**32))
    what = a.tokenizer + (" variant " + a.variant if a.variant else "")
    tag = a.tag or ("_" + a.variant if a.variant else "")
    print("NOTE tokenizer_diff%s seed=%d n=%d %s (rerun: TOK_DIFF_SEED=%d)" % (tag, seed, a.n, what, seed))
    try:
        from tokenizers import Tokenizer
    except Exception as e:  # a missing oracle is a failure, never a skip
        print("FAIL tokenizer_diff%s: cannot import HF tokenizers (`make test` installs it; or pip install tokenizers): %s" % (a.tag, e))
        return 1
    if a.variant:
        a.tokenizer = make_variant(a.tokenizer, a.variant)
        a.tag = a.tag or "_" + a.variant
    hf = Tokenizer.from_file(a.tokenizer)
    vocab = hf.get_vocab()
    ids_all = sorted(vocab.values())
    vocab_pieces = [hf.decode([i]) for i in random.Random(seed).sample(ids_all, min(2000, len(ids_all)))]
    r = random.Random(seed)
    inputs = [gen_input(r, vocab_pieces) for _ in range(a.n)]
    texts = [b.decode("utf-8", errors="replace") for b in inputs]
    hexin = ("\n".join(b.hex() for b in inputs) + "\n").encode()
    ok = 1
    for special in (1, 0):
        hf.encode_special_tokens = not special
        want = [e.ids for e in hf.encode_batch(texts)]
        args = [a.fmbatch, "tokenize", "--tokenizer", a.tokenizer, "--hex-lines"]
        if not special:
            args.append("--no-special")
        got = [json.loads(x) for x in run_fmbatch(args, hexin)]
        bad = [i for i in range(a.n) if i >= len(got) or got[i] != want[i]]
        name = "tokenizer_diff%s_encode_special_%s" % (a.tag, "on" if special else "off")
        if bad:
            ok = 0
            i = bad[0]
            print("FAIL %s: %d/%d mismatches; first: input hex %s text %r HF %s fmbatch %s" % (
                name, len(bad), a.n, inputs[i].hex()[:200], texts[i][:80], want[i][:30],
                got[i][:30] if i < len(got) else None))
        else:
            print("PASS %s (%d inputs, 0 mismatches)" % (name, a.n))
    hf.encode_special_tokens = False
    # Decoding: random id sequences (tokens that split UTF-8 sequences included) and the ids of
    # the inputs above.
    seqs = [[r.choice(ids_all) for _ in range(r.randint(0, 12))] for _ in range(a.n // 2)]
    seqs += [hf.encode(t).ids for t in texts[: a.n // 2]]
    for skip in (0, 1):
        want = hf.decode_batch(seqs, skip_special_tokens=bool(skip))
        args = [a.fmbatch, "detokenize", "--tokenizer", a.tokenizer, "--json-lines"]
        if skip:
            args.append("--skip-special")
        stdin = ("\n".join(json.dumps(s) for s in seqs) + "\n").encode()
        got = [json.loads(x) for x in run_fmbatch(args, stdin)]
        bad = [i for i in range(len(seqs)) if i >= len(got) or got[i] != want[i]]
        name = "tokenizer_diff%s_decode%s" % (a.tag, "_skip_special" if skip else "")
        if bad:
            ok = 0
            i = bad[0]
            print("FAIL %s: %d/%d mismatches; first: ids %s HF %r fmbatch %r" % (
                name, len(bad), len(seqs), seqs[i], want[i], got[i] if i < len(got) else None))
        else:
            print("PASS %s (%d id sequences, 0 mismatches)" % (name, len(seqs)))
    if a.variant:
        os.remove(a.tokenizer)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # fmbatch crashed or printed garbage: a FAIL line, not a traceback
        print("FAIL tokenizer_diff: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
