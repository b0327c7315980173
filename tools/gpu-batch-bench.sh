#!/bin/sh
# gpu-batch-bench: the cross-document batching figures, end to end through `fmbatch run`, at the
# 7B shape on a GPU machine, in one device call (binaries carried: tools/gpu-pack.sh):
#   0. fmbatch synth --shape 7b into $M (kept with REUSE=1), and `fmbatch bench --synthetic 7b`
#      at 2K and 16K tokens in the same call (the prefill bound the jobs are compared with),
#   1. scoring 2,000-token documents (JSONL -> SQLite), 2. scoring 200-token documents,
#   3. 256 documents with a 64-token sampled generation each,
#   4. QA: 64 documents of 5,200 tokens, a 32-token answer + a 3-way choice, batched and with
#      --max-batch 1 (and the two exports compared, timing fields aside: batch invariance),
#   5. one 129K-token document with a score and 4 questions;
#   6. (JOBS qa64d2, score200d2) the QA and 200-token scoring jobs with two workers on one GPU
#      (`--devices 0,0`), their rows compared with the one-worker runs' (timing fields aside);
#   7. (JOBS score2kx2, qa64x2, score2kterm: issue 17, a machine of several GPUs) the 2,000-token
#      scoring and the QA job with one worker a GPU (`--devices $DEVICES`, default all, each
#      worker under `--mem-limit $X2MEM`, default 22GiB), their speed-up and rows against the
#      one-worker runs', which processes each GPU ran (one fmbatch each) and each GPU's peak;
#      score2kterm: the same scoring job sent SIGTERM after $TERM_AFTER s (default 20), then
#      what is left running and in the 'running' state, then a rerun and its rows;
# each job with nvidia-smi sampling the GPUs' utilisation every 100 ms (mean = "GPU busy").
# Writes $OUT/batch-bench.txt (a summary line per job), $OUT/jobs.log (the end of each job's
# log) and $OUT/bench.json.
# Usage: OUT=/tmp/o tools/gpu-batch-bench.sh   (FMB=build-cuda/fmbatch, M=/tmp/s7b, RUNARGS=
# options for every `fmbatch run`, JOBS="score2k score200 gen256 qa64 qa64b1 long" to run fewer;
# a dry run of the script's logic on the CPU: SYNTH=0 BENCH=0 SCALE=50 DEVICES=0,0 X2MEM= with
# M a small model folder and FMB a CPU build)
FMB=${FMB:-$PWD/build-cuda/fmbatch}
M=${M:-/tmp/s7b}
OUT=${OUT:-/tmp/gpu-batch-bench}
W=${WORK:-/tmp/gbb}
TOK=${TOK:-$PWD/tests/fixtures/tokenizer/tokenizer.json}
mkdir -p "$OUT" "$W"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
S="$OUT/batch-bench.txt"
: >"$OUT/jobs.log"
commit=$(cat .gpu-commit 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
SMI=$(command -v nvidia-smi)
SCALE=${SCALE:-1} # divides every corpus's document count (dry runs)
DEVICES=${DEVICES:-all}
X2MEM=${X2MEM-22GiB}
echo "gpu-batch-bench at $commit on $([ -n "$SMI" ] && nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | tr '\n' ' ') (run options: ${RUNARGS:-none})" >"$S"
if [ "${SYNTH:-1}" = 0 ]; then
    : # $M is used as it is
elif [ ! -f "$M/model.safetensors.index.json" ] || [ -z "$REUSE" ]; then
    t0=$(date +%s)
    "$FMB" synth --shape 7b --out "$M" >"$W/synth.log" 2>&1 || { tail "$W/synth.log"; exit 1; }
    echo "synth 7b: $(($(date +%s) - t0)) s" >>"$S"
fi
if [ "${BENCH:-1}" != 0 ]; then
    "$FMB" bench --synthetic 7b --tokens 2048,16384 --decode-batch 64 --decode-steps 16 \
        >"$OUT/bench.json" 2>"$W/bench.log"
    echo "bench: $(cat "$OUT/bench.json")" >>"$S"
    "$FMB" bench --synthetic 7b --tokens 1024 --decode-batch 256 --decode-steps 16 2>/dev/null |
        python3 -c "import json,sys; print('bench decode:', json.load(sys.stdin)['decode'])" >>"$S"
fi

python3 - "$W" "$TOK" "$SCALE" <<'EOF'
import json, random, sys
w, tok, scale = sys.argv[1], sys.argv[2], int(sys.argv[3])
vocab = json.load(open(tok))["model"]["vocab"]
words = [t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and len(t) > 2]
rnd = random.Random(1)
def doc(n_words):
    return " ".join(rnd.choice(words) for _ in range(n_words))
def write(name, n, n_words):
    n = max(1, n // scale)
    with open("%s/%s.jsonl" % (w, name), "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": "%s-%05d" % (name, i), "text": doc(n_words)}) + "\n")
write("score2k", 2000, 2600)  # truncated to 2,000 tokens by the job (4M tokens)
write("score200", 3000, 300)  # truncated to 200
write("gen256", 256, 120)
write("qa64", 64, 6500)       # truncated to 5,200
write("long", 1, 160000)      # truncated to 129,000
EOF

job() { # name source max_doc_tokens tasks-file [extra [job] lines]
    cat >"$W/$1.toml" <<J
[job]
name = "$1"
model = "$M"
tokenizer = "$TOK"
output = "$W/$1.db"
seed = 7
max_document_tokens = $3
too_long = "truncate"
$5

[source]
kind = "jsonl"
paths = ["$W/$2.jsonl"]
id_field = "id"

$(cat "$W/$4")
J
}
cat >"$W/t-score" <<'T'
[[task]]
name = "ppl"
kind = "score"
T
cat >"$W/t-gen" <<'T'
[[task]]
name = "gen"
kind = "generate"
prompt = "{document}\nContinue:"
max_new_tokens = 64
temperature = 0.8
top_p = 0.95
ignore_eos = true
T
cat >"$W/t-qa" <<'T'
[[task]]
name = "answer"
kind = "generate"
prompt = "{document}\n\nQuestion: What is this text about?\nAnswer:"
max_new_tokens = 32
temperature = 0.8
ignore_eos = true

[[task]]
name = "kind"
kind = "choice"
prompt = "{document}\n\nThis text is"
choices = [" prose", " code", " noise"]
T
cat >"$W/t-long" <<'T'
[[task]]
name = "ppl"
kind = "score"
T
for q in 1 2 3 4; do
    printf '\n[[task]]\nname = "q%s"\nkind = "generate"\nprompt = "{document}\\nQuestion %s:"\nmax_new_tokens = 8\n' $q $q >>"$W/t-long"
done
job score2k score2k 2000 t-score
job score200 score200 200 t-score
job gen256 gen256 0 t-gen
job gen256w gen256 0 t-gen
job qa64 qa64 5200 t-qa
job qa64b1 qa64 5200 t-qa
job long long 129000 t-long
job qa64d2 qa64 5200 t-qa
job score200d2 score200 200 t-score
job score2kx2 score2k 2000 t-score
job qa64x2 qa64 5200 t-qa
job score2kterm score2k 2000 t-score

smi_start() { # name: samples every GPU (index, utilisation, memory) and its processes
    : >"$W/$1.smi"
    : >"$W/$1.apps"
    [ -n "$SMI" ] || return 0
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits \
        -lms 100 >"$W/$1.smi" 2>/dev/null &
    smi=$!
    nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name --format=csv,noheader -lms 500 \
        >"$W/$1.apps" 2>/dev/null &
    apps=$!
}
smi_stop() { # name -> "X% busy, peak GPU0 M MiB, GPU1 ...; processes a GPU: ..."
    [ -n "$SMI" ] || { echo "no nvidia-smi"; return 0; }
    kill $smi $apps 2>/dev/null
    wait $smi $apps 2>/dev/null
    awk -F', ' '{u += $2; if ($3 > m[$1]) m[$1] = $3; n++} END {if (n) {printf "%.1f%% busy, peak", u / n; for (g in m) printf " GPU%s %d MiB", g, m[g]}}' "$W/$1.smi"
    # the distinct fmbatch processes seen on each GPU (by PCI bus id)
    awk -F', ' '$3 ~ /fmbatch/ {p[$1 " " $2] = 1} END {for (k in p) {split(k, a, " "); c[a[1]]++}; printf "; fmbatch processes a GPU:"; for (b in c) printf " %s %d", b, c[b]}' "$W/$1.apps"
}
run_job() { # name [args]
    n=$1
    shift
    rm -f "$W/$n.db"*
    smi_start "$n"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # RUNARGS: extra options for every job, e.g. "--kernel matvec=gemm"
    "$FMB" run "$W/$n.toml" --progress none $RUNARGS "$@" >"$W/$n.out" 2>"$W/$n.log"
    rc=$?
    t1=$(date +%s.%N)
    wall=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
    echo "$wall" >"$W/$n.wall"
    echo "$n: rc=$rc wall $wall s, $(smi_stop "$n"); $(grep -h 'engine:\|tok/s, ' "$W/$n.log" | tr '\n' ' ')" >>"$S"
    { echo "== $n"; tail -n 4 "$W/$n.log"; } >>"$OUT/jobs.log"
}
item_counts() { # db -> "done N, pending N, ...": the items by status
    python3 -c "
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(', '.join('%s %d' % r for r in db.execute('SELECT status, count(*) FROM item GROUP BY status')))" "$1"
}
term_job() { # name: SIGTERM to the parent of a --devices run after $TERM_AFTER s, then a rerun
    n=$1
    rm -f "$W/$n.db"* "$W/$n.out" "$W/$n.log"
    # shellcheck disable=SC2086
    "$FMB" run "$W/$n.toml" --progress none $RUNARGS --devices "$DEVICES" ${X2MEM:+--mem-limit "$X2MEM"} \
        >>"$W/$n.out" 2>>"$W/$n.log" &
    pid=$!
    sleep "${TERM_AFTER:-20}"
    kill -TERM $pid
    wait $pid
    rc=$?
    sleep 1
    # processes whose command line names the job (the parent and its workers), from /proc
    left=$(python3 -c "
import os, sys
n = 0
for d in os.listdir('/proc'):
    try:
        a = open('/proc/%s/cmdline' % d, 'rb').read().split(b'\\0')
    except (OSError, ValueError):
        continue
    n += sys.argv[1].encode() in a and any(x.endswith(b'fmbatch') for x in a)
print(n)" "$W/$n.toml")
    echo "$n: SIGTERM after ${TERM_AFTER:-20} s: rc=$rc, fmbatch processes left $left, items: $(item_counts "$W/$n.db")" >>"$S"
    # shellcheck disable=SC2086
    "$FMB" run "$W/$n.toml" --progress none $RUNARGS --devices "$DEVICES" ${X2MEM:+--mem-limit "$X2MEM"} \
        >>"$W/$n.out" 2>>"$W/$n.log"
    rc=$?
    echo "$n: the rerun: rc=$rc, items: $(item_counts "$W/$n.db")" >>"$S"
    { echo "== $n"; tail -n 6 "$W/$n.log"; } >>"$OUT/jobs.log"
}
for j in ${JOBS:-score2k score200 gen256 qa64 qa64b1 long}; do
    case $j in
    qa64b1) run_job qa64b1 --max-batch 1 ;;
    gen256w) run_job gen256w --max-batch 256 ;;
    *d2) run_job "$j" --devices 0,0 ;;
    # shellcheck disable=SC2086
    *x2) run_job "$j" --devices "$DEVICES" ${X2MEM:+--mem-limit "$X2MEM"} ;;
    *term) term_job "$j" ;;
    *) run_job "$j" ;;
    esac
done
rows() { # name -> $W/name.rows: the export, timing fields and names aside
    "$FMB" export "$W/$1.toml" --format jsonl |
        python3 -c "
import json, sys
rows = []
for l in sys.stdin:
    o = json.loads(l)
    for k in ('job', 'finished_at', 'prefill_seconds', 'task_seconds', 'item_id'):
        o.pop(k, None)
    rows.append(json.dumps(o, sort_keys=True))
# several workers finish items in another order: compare as sorted sets of rows
print('\\n'.join(sorted(rows)))" >"$W/$1.rows"
}
compare() { # a b what
    [ -f "$W/$1.db" ] && [ -f "$W/$2.db" ] || return 0
    rows "$1"
    rows "$2"
    if cmp -s "$W/$1.rows" "$W/$2.rows" && [ -s "$W/$1.rows" ]; then
        echo "$1 rows = $2 rows ($3): identical ($(wc -l <"$W/$1.rows") rows)" >>"$S"
        return 0
    fi
    echo "$1 rows vs $2 rows ($3): DIFFER ($(wc -l <"$W/$1.rows") vs $(wc -l <"$W/$2.rows") rows, $(diff "$W/$1.rows" "$W/$2.rows" | grep -c '^<') differ)" >>"$S"
    python3 - "$W/$1.rows" "$W/$2.rows" >>"$S" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
cols = {}
for x, y in zip(a, b):
    for k in x:
        if x.get(k) != y.get(k):
            cols[k] = cols.get(k, 0) + 1
print("  columns that differ (rows):", cols)
PY
}
# (the job name aside too: the jobs are named after their files)
compare qa64 qa64b1 "batched vs --max-batch 1"
compare qa64 qa64d2 "one worker vs --devices 0,0"
compare score200 score200d2 "one worker vs --devices 0,0"
compare score2k score2kx2 "one worker vs --devices $DEVICES"
compare qa64 qa64x2 "one worker vs --devices $DEVICES"
compare score2k score2kterm "one worker vs SIGTERM, then a rerun"
for p in "score2k score2kx2" "qa64 qa64x2"; do
    set -- $p
    [ -f "$W/$1.wall" ] && [ -f "$W/$2.wall" ] &&
        echo "$2: $(awk "BEGIN{printf \"%.2f\", $(cat "$W/$1.wall") / $(cat "$W/$2.wall")}")x the one-worker throughput" >>"$S"
done
cat "$S"
