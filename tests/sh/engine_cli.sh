#!/bin/sh
# End-to-end checks of the engine commands: bad model folders (each exits 2 with one message
# naming the file and the tensor or field), `fmbatch synth` round trips, score/generate output.
# Prints PASS/FAIL lines for tests/run.sh.
set -u
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
SRC=tests/fixtures/tiny-a

# bad_case NAME WANT1 WANT2 : inspect $T/NAME must exit 2 with one stderr line holding both.
bad_case() {
    name=$1
    "$F" inspect --model "$T/$name" >"$T/out" 2>"$T/err"
    rc=$?
    lines=$(wc -l <"$T/err")
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$2" "$T/err" && grep -qF -- "$3" "$T/err"; then
        echo "PASS bad model: $name"
    else
        echo "FAIL bad model: $name: rc=$rc lines=$lines, want '$2' and '$3' in: $(cat "$T/err")"
    fi
}

python3 - "$SRC" "$T" <<'PY'
import json, os, shutil, struct, sys
src, out = sys.argv[1], sys.argv[2]
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]

def write(name, header=None, body=None, whole=None, config=None):
    d = os.path.join(out, name); os.makedirs(d)
    cfg = open(os.path.join(src, "config.json")).read() if config is None else config
    open(os.path.join(d, "config.json"), "w").write(cfg)
    if whole is None:
        h = json.dumps(hdr if header is None else header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        whole = struct.pack("<Q", len(h)) + h + (data if body is None else body)
    open(os.path.join(d, "model.safetensors"), "wb").write(whole)

def edit(f):
    h = json.loads(json.dumps(hdr)); f(h); return h

write("missing-tensor", edit(lambda h: h.pop("backbone.layers.1.mixer.D")))
def swap(h):
    t = h["backbone.layers.0.mixer.x_proj.weight"]; t["shape"] = t["shape"][::-1]
write("wrong-shape", edit(swap))
write("truncated", whole=raw[:len(raw) - 1000])
write("header-past-end", whole=struct.pack("<Q", len(raw) * 4) + raw[8:])
write("unknown-dtype", edit(lambda h: h["backbone.norm_f.weight"].update(dtype="Q4")))
write("malformed-json", config='{"model_type": "falcon_mamba", "hidden_size": 64,,}')
def overlap(h):
    a = h["backbone.layers.0.mixer.D"]; b = h["backbone.layers.1.mixer.D"]
    b["data_offsets"] = a["data_offsets"]
write("overlapping-offsets", edit(overlap))
write("missing-field", config=json.dumps({k: v for k, v in json.load(open(os.path.join(src, "config.json"))).items() if k != "hidden_size"}))
def extra(h):
    h["backbone.layers.7.mixer.D"] = dict(h["backbone.layers.1.mixer.D"])
write("unexpected-tensor", edit(extra))
cfg = json.load(open(os.path.join(src, "config.json"))); cfg["intermediate_size"] = 96
write("inner-mismatch", config=json.dumps(cfg))
# a sharded folder whose index names a shard that does not exist
d = os.path.join(out, "missing-shard"); os.makedirs(d)
shutil.copy(os.path.join(src, "config.json"), d)
open(os.path.join(d, "model.safetensors.index.json"), "w").write(json.dumps(
    {"weight_map": {"backbone.norm_f.weight": "model-00001-of-00002.safetensors"}}))
PY

bad_case missing-tensor "model.safetensors" "missing tensor \"backbone.layers.1.mixer.D\""
bad_case wrong-shape "wrong-shape/model.safetensors" "backbone.layers.0.mixer.x_proj.weight"
bad_case truncated "truncated/model.safetensors" "truncated"
bad_case header-past-end "header-past-end/model.safetensors" "header length"
bad_case unknown-dtype "unknown-dtype/model.safetensors" "dtype \"Q4\""
bad_case malformed-json "malformed-json/config.json:1:" "malformed JSON"
bad_case overlapping-offsets "overlapping-offsets/model.safetensors" "overlap"
bad_case missing-field "missing-field/config.json" "\"hidden_size\""
bad_case unexpected-tensor "unexpected-tensor/model.safetensors" "backbone.layers.7.mixer.D"
bad_case inner-mismatch "in_proj.weight" "intermediate_size"
bad_case missing-shard "model-00001-of-00002.safetensors" "cannot open"

# synth: a sharded random checkpoint loads, counts its parameters, scores and generates.
if "$F" synth --shape "D=48,L=3,V=300,E=80,N=8,R=5,K=3" --out "$T/syn" --shards 3 --dtype bf16 \
    2>"$T/err" && [ -f "$T/syn/model.safetensors.index.json" ] &&
    [ -f "$T/syn/model-00003-of-00003.safetensors" ]; then
    echo "PASS synth writes a sharded checkpoint"
else
    echo "FAIL synth writes a sharded checkpoint: $(cat "$T/err")"
fi
# D=48 L=3 V=300 E=80 N=8 R=5 K=3, untied: per layer 48+2*80*48+80*3+80+(5+16)*80+80*5+80+80*8+80+48*80
per_layer=$((48 + 2 * 80 * 48 + 80 * 3 + 80 + 21 * 80 + 80 * 5 + 80 + 80 * 8 + 80 + 48 * 80))
want=$((3 * per_layer + 2 * 300 * 48 + 48))
got=$("$F" inspect --model "$T/syn" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parameters"])')
if [ "$got" = "$want" ]; then
    echo "PASS synth parameter count ($got)"
else
    echo "FAIL synth parameter count: got $got want $want"
fi
echo "5 17 299 0 42 7 7 7 100" >"$T/ids"
out=$("$F" score --model "$T/syn" --ids-file "$T/ids" --per-token)
if echo "$out" | python3 -c '
import json, math, sys
r = json.load(sys.stdin)
assert r["tokens"] == 9 and len(r["nll"]) == 8 and len(r["argmax"]) == 9
assert abs(sum(r["nll"]) - r["sum_nll"]) < 1e-3 and abs(r["mean_nll"] - r["sum_nll"] / 8) < 1e-6
assert r["bits_per_byte"] is None and all(math.isfinite(x) for x in r["nll"])
'; then echo "PASS score JSON on a synth model"; else echo "FAIL score JSON on a synth model: $out"; fi

# One token: nothing is scored; undefined values are null, never NaN.
echo "5" >"$T/one"
out=$("$F" score --model "$T/syn" --ids-file "$T/one")
case "$out" in
*'"mean_nll":null'*'"ppl":null'*) echo "PASS one token gives null" ;;
*) echo "FAIL one token gives null: $out" ;;
esac

# generate: greedy is reproducible; sampled with a seed is reproducible; the JSON is complete.
g1=$("$F" generate --model "$T/syn" --ids-file "$T/ids" --max-new-tokens 7)
g2=$("$F" generate --model "$T/syn" --ids-file "$T/ids" --max-new-tokens 7 --chunk-tokens 2)
s1=$("$F" generate --model "$T/syn" --ids-file "$T/ids" --max-new-tokens 7 --temperature 0.9 --top-p 0.9 --seed 5)
s2=$("$F" generate --model "$T/syn" --ids-file "$T/ids" --max-new-tokens 7 --temperature 0.9 --top-p 0.9 --seed 5)
if [ "$s1" = "$s2" ] && printf '%s\n%s\n' "$g1" "$g2" | python3 -c '
import json, sys
r, q = [json.loads(l) for l in sys.stdin]
assert r["prompt_tokens"] == 9 and len(r["ids"]) == 7 and len(r["logprobs"]) == 7
assert r["finish_reason"] == "length" and r["text"] is None
# another chunk length: the same tokens, log-probabilities equal within float rounding
assert r["ids"] == q["ids"] and max(abs(a - b) for a, b in zip(r["logprobs"], q["logprobs"])) < 1e-5
'; then echo "PASS generate JSON and reproducibility"; else echo "FAIL generate: $g1 / $g2 / $s1 / $s2"; fi

# Bad ids file and out-of-vocabulary ids: exit 2 naming the file or id.
echo "1 2 x3" >"$T/bad"
"$F" score --model "$T/syn" --ids-file "$T/bad" 2>"$T/err" >/dev/null
rc=$?
if [ $rc -eq 2 ] && grep -q "bad:1: not a token id" "$T/err"; then echo "PASS bad ids file"; else echo "FAIL bad ids file: rc=$rc $(cat "$T/err")"; fi
echo "1 2 300" >"$T/oov"
"$F" score --model "$T/syn" --ids-file "$T/oov" 2>"$T/err" >/dev/null
rc=$?
if [ $rc -eq 2 ] && grep -q "token id 300" "$T/err"; then echo "PASS out-of-vocabulary id"; else echo "FAIL out-of-vocabulary id: rc=$rc $(cat "$T/err")"; fi

# inspect lists the kernel choices: n/a on the cpu backend; on cuda what was asked, from
# --kernel over the legacy environment; a bad choice is a usage error naming it.
kern() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["backend"], r["kernels"])'; }
got=$("$F" inspect --model "$T/syn" --backend cpu --kernel scan=seg | kern)
if [ "$got" = "cpu n/a (cpu backend)" ]; then echo "PASS inspect: kernels n/a on cpu"; else echo "FAIL inspect: kernels n/a on cpu: $got"; fi
got=$(FMB_SCAN=tile1 FMB_PDL=0 FMB_GEMM=cublas "$F" inspect --model "$T/syn" --backend cuda --kernel gemm=fixedws,matvec=mma | kern)
want="cuda scan=tile1,matvec=mma,gemm=fixedws,pdl=off,graphs=on,debug-sync=off,gemm-verbose=off,smem-cap=off"
if [ "$got" = "$want" ]; then echo "PASS inspect: kernel choices from --kernel and the environment"; else echo "FAIL inspect: kernel choices: got '$got' want '$want'"; fi
"$F" inspect --model "$T/syn" --kernel scan=fast >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "kernel" "$T/err"; then echo "PASS inspect: bad --kernel exits 2"; else echo "FAIL inspect: bad --kernel: rc=$rc $(cat "$T/err")"; fi
FMB_MATVEC=fast "$F" inspect --model "$T/syn" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "FMB_MATVEC" "$T/err"; then echo "PASS inspect: bad legacy variable exits 2"; else echo "FAIL inspect: bad FMB_MATVEC: rc=$rc $(cat "$T/err")"; fi

# OpenMP threads wait passively by default (batch/cli/main.c); a policy the user set is kept.
v=$(env -u OMP_WAIT_POLICY "$F" --version)
case $v in *"wait policy: PASSIVE"*) echo "PASS OpenMP wait policy passive by default" ;;
*) echo "FAIL OpenMP wait policy passive by default: $v" ;; esac
v=$(OMP_WAIT_POLICY=active "$F" --version)
case $v in *"wait policy: active"*) echo "PASS OpenMP wait policy set by the user is kept" ;;
*) echo "FAIL OpenMP wait policy set by the user is kept: $v" ;; esac

# synth --tokenizer makes a complete model folder (score --prompt needs the tokenizer); one
# whose ids do not fit the vocabulary is refused, naming it.
if "$F" synth --shape D=64,L=2,V=512 --out "$T/syt" --tokenizer "$SRC/tokenizer.json" 2>/dev/null &&
    cmp -s "$SRC/tokenizer.json" "$T/syt/tokenizer.json" &&
    "$F" score --model "$T/syt" --prompt "hello there" 2>/dev/null | grep -q '"tokens":'; then
    echo "PASS synth --tokenizer: a complete model folder"
else
    echo "FAIL synth --tokenizer: a complete model folder"
fi
"$F" synth --shape D=64,L=2,V=100 --out "$T/syt2" --tokenizer "$SRC/tokenizer.json" 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "512 tokens do not fit the model's vocabulary of 100" "$T/err"; then
    echo "PASS synth --tokenizer: too large a vocabulary is refused"
else
    echo "FAIL synth --tokenizer: too large a vocabulary is refused: rc $rc $(cat "$T/err")"
fi
