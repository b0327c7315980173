#!/usr/bin/env python3
"""kernel-times: sum ncu's per-kernel durations (tools/gpu-profile.sh's kernels.csv) by phase
and kernel. A phase starts at each embed kernel: a prefill chunk, or a decode step (grid of the
embed = tokens). Prints, per distinct phase shape, the time of the last such phase by kernel.
Usage: tools/kernel-times.py kernels.csv"""
import csv, re, sys
from collections import OrderedDict

lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
rows = list(csv.DictReader(lines[start:]))[1:]  # the first row after the header holds units


def short(name):
    name = re.sub(r'\(.*', '', name)
    name = re.sub(r'^void ', '', name)
    return name[:60]


def num(s):
    return float(s.replace(',', ''))


phases = []
cur = None
for r in rows:
    n = short(r['Kernel Name'])
    if n.startswith('embed'):
        cur = {'key': r['Grid Size'], 'k': OrderedDict(), 'total': 0.0, 'count': 0}
        phases.append(cur)
    if cur is None:
        continue
    ns = num(r['gpu__time_duration.sum'])
    key = n + ' ' + r['Grid Size'] + ' ' + r['Block Size']
    e = cur['k'].setdefault(key, [0, 0.0, r['launch__registers_per_thread']])
    e[0] += 1
    e[1] += ns
    cur['total'] += ns
    cur['count'] += 1

seen = OrderedDict()
for p in phases:
    seen[(p['key'], p['count'])] = p  # the last phase of each shape
for (key, cnt), p in seen.items():
    print(f"== phase: embed grid {key}, {cnt} kernels, {p['total'] / 1e3:.1f} us")
    for k, (c, ns, reg) in sorted(p['k'].items(), key=lambda kv: -kv[1][1]):
        print(f"  {ns / 1e3:10.1f} us  {c:5d} x {ns / c / 1e3:8.2f} us  r{reg:>3}  {k}")
