#!/bin/sh
# `fmbatch bench` on the CPU backend (issue 13): --threads is accepted and shown, the memory
# figures are the process's peak resident set (no device fields of 0), the weights are counted
# as float32. Prints PASS/FAIL lines for tests/run.sh.
set -u
F=${FMBATCH:?FMBATCH must name the binary}
params=$("$F" inspect --model tests/fixtures/tiny-a | python3 -c 'import json,sys; print(json.load(sys.stdin)["parameters"])')
out=$("$F" bench --model tests/fixtures/tiny-a --backend cpu --threads 1 --tokens 64,128 \
    --decode-steps 2 --decode-batch 2 2>/dev/null)
rc=$?
python3 - "$rc" "$out" "$params" <<'PY'
import json, sys
rc, out, params = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def check(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + "bench cpu: " + what + ("" if ok else ": " + detail))
check(rc == 0, "exits 0", str(rc))
try:
    d = json.loads(out)
except ValueError:
    check(False, "prints JSON", out[:200])
    sys.exit(0)
check(d["device"] == "cpu (1 threads)", "--threads 1 is used", d["device"])
check("peak_device_bytes" not in out, "no device memory fields on the CPU", out[:200])
check(d["peak_rss_bytes"] > 0 and all(p["peak_rss_bytes"] > 0 for p in d["prefill"]),
      "peak resident set reported", out[:200])
check(d["weights_bytes"] == 4 * params, "weights counted as float32",
      "%d vs 4 x %d" % (d["weights_bytes"], params))
check(len(d["prefill"]) == 2 and [r["batch"] for r in d["decode"]] == [1, 1, 2],
      "two prefill rows; decode at batch 1 (short, long) and 2", out[:300])
PY
