"""jobs/slurm-array.sbatch and jobs/k8s-indexed-job.yaml, checked and run on a tiny corpus:
- the sbatch script passes `bash -n`; run as a user would, it submits (a stand-in sbatch on
  PATH records the calls) an array of SHARDS tasks and a merge with --dependency=afterok on it;
  run as each array task (SLURM_ARRAY_TASK_ID/_MIN/_COUNT) and then as the merge step, it leaves
  the merged output with the unsharded run's rows;
- the YAML (no PyYAML here: a structural check) holds an Indexed Job whose completions equal its
  --shard-count and a merge Job naming every shard's output; its two commands, run with
  JOB_COMPLETION_INDEX = 0..completions-1, give the unsharded run's rows too.
Run from the repository root with FMBATCH = the binary; prints PASS/FAIL lines.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
SBATCH = os.path.abspath("jobs/slurm-array.sbatch")
YAML = os.path.abspath("jobs/k8s-indexed-job.yaml")
TIMING = ("finished_at", "prefill_seconds", "task_seconds", "item_id")
JOB = '''[job]
name = "sched"
model = "%s"
output = "%s"
seed = 11
threads = 1
[source]
kind = "jsonl"
paths = ["docs.jsonl"]
id_field = "id"
[[task]]
name = "ppl"
kind = "score"
[[task]]
name = "next"
kind = "generate"
prompt = "{document}\\nNext:"
max_new_tokens = 4
temperature = 0.7
'''


def setup(d, output):
    os.makedirs(os.path.join(d, "out"), exist_ok=True)
    with open(os.path.join(d, "docs.jsonl"), "w") as f:
        for i in range(30):
            f.write(json.dumps({"id": "k%02d" % i, "text": "word %d " % i * (1 + i % 7)}) + "\n")
    with open(os.path.join(d, "job.toml"), "w") as f:
        f.write(JOB % (MODEL, output))


def rows(d, env):
    r = subprocess.run(["fmbatch", "export", "job.toml"], cwd=d, env=env, capture_output=True,
                       text=True)
    out = []
    for line in r.stdout.splitlines():
        o = json.loads(line)
        for k in TIMING:
            o.pop(k, None)
        out.append(json.dumps(o, sort_keys=True))
    return out


def main():
    top = tempfile.mkdtemp(prefix="fmb_sched_")
    try:
        bin_dir = os.path.join(top, "bin")
        os.mkdir(bin_dir)
        os.symlink(FMBATCH, os.path.join(bin_dir, "fmbatch"))
        log = os.path.join(top, "sbatch.log")
        with open(os.path.join(bin_dir, "sbatch"), "w") as f:
            f.write('#!/bin/sh\necho "$*" >>"%s"\necho 4242\n' % log)
        os.chmod(os.path.join(bin_dir, "sbatch"), 0o755)
        env = dict(os.environ)
        env["PATH"] = bin_dir + os.pathsep + env["PATH"]
        for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
                  "JOB_COMPLETION_INDEX", "FMB_STEP"):
            env.pop(k, None)
        # the reference: the job unsharded
        ref_dir = os.path.join(top, "ref")
        setup(ref_dir, "out/score-{shard}.db")
        subprocess.run(["fmbatch", "run", "job.toml", "--progress", "none"], cwd=ref_dir, env=env,
                       capture_output=True)
        ref = rows(ref_dir, env)
        check(len(ref) == 60, "reference run: 30 items, 2 tasks", "%d rows" % len(ref))

        # Slurm
        r = subprocess.run(["bash", "-n", SBATCH], capture_output=True, text=True)
        check(r.returncode == 0, "slurm-array.sbatch passes bash -n", r.stderr)
        d = os.path.join(top, "slurm")
        setup(d, "out/score-{shard}.db")
        senv = dict(env, JOB="job.toml", OUTPUT="out/score-{shard}.db", SHARDS="3")
        r = subprocess.run(["bash", SBATCH], cwd=d, env=senv, capture_output=True, text=True)
        calls = open(log).read().splitlines() if os.path.exists(log) else []
        check(r.returncode == 0 and len(calls) == 2 and "--array=0-2" in calls[0] and
              "--dependency=afterok:4242" in calls[1] and "FMB_STEP=merge" in calls[1],
              "the sbatch script submits an array of 3 and a merge after it", r.stderr + str(calls))
        rcs = []
        for i in range(3):  # as Slurm runs the array tasks (any order)
            t = dict(senv, SLURM_JOB_ID="4243", SLURM_ARRAY_JOB_ID="4242",
                     SLURM_ARRAY_TASK_ID=str(2 - i), SLURM_ARRAY_TASK_MIN="0",
                     SLURM_ARRAY_TASK_MAX="2", SLURM_ARRAY_TASK_COUNT="3")
            rcs.append(subprocess.run(["bash", SBATCH], cwd=d, env=t, capture_output=True,
                                      text=True).returncode)
        m = subprocess.run(["bash", SBATCH], cwd=d, env=dict(senv, FMB_STEP="merge"),
                           capture_output=True, text=True)
        check(rcs == [0, 0, 0] and m.returncode == 0 and '"complete":true' in m.stdout,
              "the array tasks and the merge step run", "%r %s %s" % (rcs, m.stdout, m.stderr))
        check(rows(d, env) == ref, "Slurm: the merged output has the unsharded run's rows")

        # Kubernetes
        text = open(YAML).read()
        docs = [x for x in text.split("\n---\n")]
        kinds = [re.findall(r"^kind: (\w+)$", x, re.M) for x in docs]
        comp = re.search(r"^  completions: (\d+)$", docs[0], re.M)
        par = re.search(r"^  parallelism: (\d+)$", docs[0], re.M)
        indexed = re.search(r"^  completionMode: Indexed$", docs[0], re.M)
        cmds = [re.findall(r"^            - (fmbatch .*)$", x, re.M) for x in docs]
        tabs = "\t" in text
        n = int(comp.group(1)) if comp else 0
        ok = (len(docs) == 2 and kinds == [["Job"], ["Job"]] and indexed and n > 1 and par and
              not tabs and all(len(c) == 1 for c in cmds) and
              ("--shard auto --shard-count %d" % n) in cmds[0][0] and
              all(("out/score-%d.db" % i) in cmds[1][0] for i in range(n)) and
              "out/score-all.db" in cmds[1][0] and "nvidia.com/gpu: 1" in docs[0])
        check(ok, "k8s-indexed-job.yaml: an Indexed Job of N pods with --shard-count N, and a "
              "merge Job of the N outputs", "%r %r %r" % (kinds, n, cmds))
        if ok:
            d = os.path.join(top, "k8s")
            setup(d, "out/score-{shard}.db")
            rcs = []
            for i in range(n):
                rcs.append(subprocess.run(["/bin/sh", "-c", cmds[0][0]], cwd=d,
                                          env=dict(env, JOB_COMPLETION_INDEX=str(i)),
                                          capture_output=True, text=True).returncode)
            m = subprocess.run(["/bin/sh", "-c", cmds[1][0]], cwd=d, env=env,
                               capture_output=True, text=True)
            check(rcs == [0] * n and m.returncode == 0 and '"complete":true' in m.stdout,
                  "the indexed pods' and the merge's commands run",
                  "%r %s %s" % (rcs, m.stdout, m.stderr))
            check(rows(d, env) == ref, "Kubernetes: the merged output has the unsharded rows")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("scheduler_examples: %d failures" % failures())
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
