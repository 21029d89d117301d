#!/usr/bin/env python3
"""Seeded random key-value pairs for `tributary state import`: N lines "KEYHEX VALUEHEX".

Keys are 32 random bytes, values 1-64 random bytes. Usage: gen-pairs.py N [SEED] > pairs.txt.
Prints the total of key and value bytes on stderr.
"""
import random
import sys

n = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
raw = 0
out = sys.stdout
for _ in range(n):
    key = rng.randbytes(32)
    value = rng.randbytes(rng.randint(1, 64))
    raw += len(key) + len(value)
    out.write(f"{key.hex()} {value.hex()}\n")
print(raw, file=sys.stderr)
