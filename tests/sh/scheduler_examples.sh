#!/bin/sh
# The scheduler examples (jobs/slurm-array.sbatch, jobs/k8s-indexed-job.yaml) parse, and their
# fmbatch commands, run with the variables Slurm and Kubernetes would set, give the rows of an
# unsharded run (tests/sh/scheduler_examples.py).
exec python3 "$(dirname "$0")/scheduler_examples.py"
