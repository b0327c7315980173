#!/usr/bin/env python3
"""Copies a checkpoint folder with values of one tensor overwritten (NaN by default).

    tools/poison_safetensors.py SRC_DIR DST_DIR TENSOR [--value nan|inf|-inf] [--index I ...]

Reads SRC_DIR/model.safetensors (one file, the HF layout: 8-byte little-endian header length,
JSON header, data), writes DST_DIR with every other file of SRC_DIR copied and the element(s) I
(flat index, default 0) of TENSOR set to the value. F32, F16, BF16 and F64 tensors. Used by the
tests of non-finite checkpoints (tests/sh/numerics_e2e.py); needs no torch.
"""
import argparse
import json
import os
import shutil
import struct
import sys


def encode(dtype, value):
    f = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[value]
    if dtype == "F32":
        return struct.pack("<f", f)
    if dtype == "F64":
        return struct.pack("<d", f)
    if dtype == "F16":
        return struct.pack("<e", f)
    if dtype == "BF16":
        return struct.pack("<f", f)[2:]  # the high half of the float32 (little-endian)
    sys.exit("poison_safetensors: %s is not a floating-point dtype" % dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("tensor")
    ap.add_argument("--value", default="nan", choices=["nan", "inf", "-inf"])
    ap.add_argument("--index", type=int, action="append")
    a = ap.parse_args()
    os.makedirs(a.dst, exist_ok=True)
    for name in os.listdir(a.src):
        if name != "model.safetensors" and os.path.isfile(os.path.join(a.src, name)):
            shutil.copy(os.path.join(a.src, name), os.path.join(a.dst, name))
    raw = bytearray(open(os.path.join(a.src, "model.safetensors"), "rb").read())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    t = header.get(a.tensor)
    if t is None:
        sys.exit("poison_safetensors: no tensor %s" % a.tensor)
    size = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}.get(t["dtype"], 0)
    v = encode(t["dtype"], a.value)
    begin, end = t["data_offsets"]
    for i in a.index or [0]:
        at = 8 + n + begin + i * size
        if i < 0 or at + size > 8 + n + end:
            sys.exit("poison_safetensors: index %d outside %s" % (i, a.tensor))
        raw[at:at + size] = v
    open(os.path.join(a.dst, "model.safetensors"), "wb").write(raw)


if __name__ == "__main__":
    main()
