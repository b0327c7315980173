#!/bin/sh
# fmbatch tokenize / detokenize: output format, --no-special, stdin, --model DIR, and exit code 2
# with a message naming the file (and the field) for bad input.
F=tests/fixtures/tokenizer/tokenizer.json
B=${FMBATCH:-build/fmbatch}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
ok() { if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: got '$2', want '$3'"; fi; }

printf 'Hello, world!' >"$T/in.txt"
ok tok_cli_tokenize "$("$B" tokenize --tokenizer "$F" "$T/in.txt")" "[21239,23,1789,12]"
ok tok_cli_stdin "$(printf 'Hello, world!' | "$B" tokenize --tokenizer "$F")" "[21239,23,1789,12]"
ok tok_cli_special "$(printf '<|endoftext|> hi' | "$B" tokenize --tokenizer "$F")" "[11,332,84]"
ok tok_cli_no_special "$(printf '<|endoftext|> hi' | "$B" tokenize --tokenizer "$F" --no-special)" \
    "[16230,676,1424,6474,15804,332,84]"
ok tok_cli_empty "$(printf '' | "$B" tokenize --tokenizer "$F")" "[]"
ok tok_cli_detokenize "$(echo '21239 23 1789 12' | "$B" detokenize --tokenizer "$F")" "Hello, world!"
ok tok_cli_detok_special "$(echo '11 332 84' | "$B" detokenize --tokenizer "$F")" "<|endoftext|> hi"
ok tok_cli_skip_special "$(echo '11 332 84' | "$B" detokenize --tokenizer "$F" --skip-special)" " hi"
# Invalid UTF-8 in, U+FFFD out (a lone 0xFF byte).
ok tok_cli_lossy "$(printf 'a\377b' | "$B" tokenize --tokenizer "$F" | tr ',[]' '   ' | "$B" detokenize --tokenizer "$F" | od -An -tx1 | tr -d ' \n')" "61efbfbd62"
mkdir -p "$T/model"
cp tests/fixtures/tiny-a/tokenizer.json "$T/model/"
out=$(printf 'Hello' | "$B" tokenize --model "$T/model")
case "$out" in \[*\]) echo "PASS tok_cli_model_dir" ;; *) echo "FAIL tok_cli_model_dir: '$out'" ;; esac

# Errors: exit 2, message names the file (and the field).
err() { # name want-substring command...
    name=$1 want=$2
    shift 2
    msg=$("$@" 2>&1 >/dev/null)
    rc=$?
    case "$msg" in
    *"$want"*) [ "$rc" = 2 ] && echo "PASS $name" || echo "FAIL $name: exit $rc, want 2 ($msg)" ;;
    *) echo "FAIL $name: exit $rc, message '$msg' lacks '$want'" ;;
    esac
}
echo '{"model": {"type": "BPE", "merges": []}, "pre_tokenizer": null}' >"$T/novocab.json"
err tok_cli_err_vocab "novocab.json: model.vocab" "$B" tokenize --tokenizer "$T/novocab.json" "$T/in.txt"
echo '{"model": ' >"$T/bad.json"
err tok_cli_err_json "bad.json: bad JSON" "$B" tokenize --tokenizer "$T/bad.json" "$T/in.txt"
python3 - "$T" <<'PY'
import json, sys
t = json.load(open("tests/fixtures/tiny-a/tokenizer.json"))
t["normalizer"] = {"type": "NFC"}
json.dump(t, open(sys.argv[1] + "/norm.json", "w"))
t["normalizer"] = None
t["pre_tokenizer"]["pretokenizers"][0]["type"] = "Metaspace"
json.dump(t, open(sys.argv[1] + "/pretok.json", "w"))
t = json.load(open("tests/fixtures/tiny-a/tokenizer.json"))
t["model"]["merges"].append("qqzz Ġ")
json.dump(t, open(sys.argv[1] + "/merge.json", "w"))
PY
err tok_cli_err_normalizer "norm.json: normalizer" "$B" tokenize --tokenizer "$T/norm.json" "$T/in.txt"
err tok_cli_err_pretok "pretok.json: pre_tokenizer.pretokenizers[0].type" "$B" tokenize --tokenizer "$T/pretok.json" "$T/in.txt"
err tok_cli_err_merge "merge.json: model.merges[" "$B" tokenize --tokenizer "$T/merge.json" "$T/in.txt"
err tok_cli_err_missing "nothere.json" "$B" tokenize --tokenizer "$T/nothere.json" "$T/in.txt"
err tok_cli_err_input "nofile.txt" "$B" tokenize --tokenizer "$F" "$T/nofile.txt"
echo '1 2 x3' >"$T/ids.txt"
err tok_cli_err_ids "ids.txt" "$B" detokenize --tokenizer "$F" "$T/ids.txt"
echo '1 99999999' >"$T/ids2.txt"
err tok_cli_err_id_range "ids2.txt: token id 99999999" "$B" detokenize --tokenizer "$F" "$T/ids2.txt"
err tok_cli_err_flag "exactly one of" "$B" tokenize "$T/in.txt"
# Round trips: the JSON array tokenize prints is what detokenize and --ids-file take, as well
# as whitespace-separated ids; a bad element is named.
ok tok_cli_roundtrip "$(printf 'Hello, world! <|endoftext|> ünï' | "$B" tokenize --tokenizer "$F" | "$B" detokenize --tokenizer "$F")" "Hello, world! <|endoftext|> ünï"
printf 'Hello, world!' | "$B" tokenize --model tests/fixtures/tiny-a >"$T/ids.json"
tr ',[]' '   ' <"$T/ids.json" >"$T/ids.txt"
a=$("$B" score --model tests/fixtures/tiny-a --ids-file "$T/ids.json" 2>&1)
b=$("$B" score --model tests/fixtures/tiny-a --ids-file "$T/ids.txt" 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "PASS tok_cli_ids_file_json"; else echo "FAIL tok_cli_ids_file_json: '$a' vs '$b'"; fi
echo '[1, "x", 3]' >"$T/bad.json"
"$B" detokenize --tokenizer "$F" "$T/bad.json" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "bad.json: element 1 is not a token id" "$T/err"; then echo "PASS tok_cli_bad_json_ids"; else echo "FAIL tok_cli_bad_json_ids: rc $rc $(cat "$T/err")"; fi
exit 0
