"""Byte n-gram baselines for tinygpt, scored on exactly the bytes evaluate.py scores.

Usage:  python ngram_baseline.py DATA_DIR [--max-order 4] [--split val] [--json out.json]

For each order k (the number of preceding bytes a prediction is conditioned on, k = 0..max-order)
it fits two models on train.txt and prints their bits per byte on bytes 1..VAL_BYTES of val.txt
(the same bytes as the task's `val_bpb`; `--split test` scores the test play instead):

* add-one:  p(w | h) = (c(h w) + 1) / (c(h) + 256), with h the k preceding bytes;
* Kneser-Ney: interpolated Kneser-Ney with one absolute discount per order,
  D = n1 / (n1 + 2 n2) (n1, n2: the numbers of n-grams seen once and twice), continuation counts
  for the lower orders, and the uniform 1/256 at the bottom.

A byte at position i of the scored text is conditioned on the k bytes before it in that text
(fewer at the very start); unlike the GPT's evaluation windows, the context never resets.
Pure Python (no torch); about 10 s per order on one core.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# The scored bytes: the same constants as program/evaluate.py (which needs torch; a test checks
# that they agree).
VAL_BYTES = 65536
TEST_BYTES = 65536
V = 256


def ngram_counts(data: bytes, n: int) -> Counter:
    return Counter(data[i:i + n] for i in range(len(data) - n + 1))


class AddOne:
    def __init__(self, data: bytes, k: int):
        self.k = k
        self.full = ngram_counts(data, k + 1)
        self.ctx = ngram_counts(data, k) if k else Counter({b"": len(data)})

    def prob(self, h: bytes, w: int) -> float:
        h = h[-self.k:] if self.k else b""
        return (self.full.get(h + bytes([w]), 0) + 1) / (self.ctx.get(h, 0) + V)


class KneserNey:
    """Interpolated Kneser-Ney over contexts of length 0..k."""

    def __init__(self, data: bytes, k: int):
        self.k = k
        raw = {n: ngram_counts(data, n) for n in range(1, k + 2)}
        # Order n's counts: raw counts at the top, continuation counts N1+(. g) below.
        self.counts: dict[int, Counter] = {k + 1: raw[k + 1]}
        for n in range(k, 0, -1):
            cont: Counter = Counter()
            for gram in raw[n + 1]:
                cont[gram[1:]] += 1
            self.counts[n] = cont
        self.discount: dict[int, float] = {}
        self.total: dict[int, dict[bytes, int]] = {}
        self.types: dict[int, dict[bytes, int]] = {}
        for n, counts in self.counts.items():
            n1 = sum(1 for c in counts.values() if c == 1)
            n2 = sum(1 for c in counts.values() if c == 2)
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
            total: dict[bytes, int] = defaultdict(int)
            types: dict[bytes, int] = defaultdict(int)
            for gram, c in counts.items():
                total[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.total[n], self.types[n] = dict(total), dict(types)

    def prob(self, h: bytes, w: int) -> float:
        p = 1.0 / V
        for n in range(1, self.k + 2):  # from the unigram up to the full order
            if len(h) < n - 1:
                break
            ctx = h[len(h) - (n - 1):] if n > 1 else b""
            total = self.total[n].get(ctx, 0)
            if total == 0:
                continue  # unseen context: keep the lower-order estimate
            d = self.discount[n]
            c = self.counts[n].get(ctx + bytes([w]), 0)
            p = max(c - d, 0.0) / total + d * self.types[n][ctx] / total * p
        return p


def bits_per_byte(model, text: bytes, n_bytes: int) -> float:
    k = model.k
    total = 0.0
    for i in range(1, n_bytes + 1):
        total -= math.log2(model.prob(text[max(0, i - k):i] if k else b"", text[i]))
    return total / n_bytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the folder prepare.py wrote")
    p.add_argument("--max-order", type=int, default=4)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args(argv)
    folder = Path(args.data)
    train = (folder / "visible" / "train.txt").read_bytes()
    text = (folder / "sealed" / f"{args.split}.txt").read_bytes()
    n_bytes = VAL_BYTES if args.split == "val" else TEST_BYTES
    print(f"byte n-grams fit on {len(train):,} training bytes, scored on bytes 1..{n_bytes} "
          f"of {args.split}.txt ({args.split}_bpb)")
    print(f"{'k':>2}  {'add-one':>8}  {'Kneser-Ney':>10}  seconds")
    rows = []
    for k in range(args.max_order + 1):
        t0 = time.time()
        add_one = bits_per_byte(AddOne(train, k), text, n_bytes)
        kn = bits_per_byte(KneserNey(train, k), text, n_bytes)
        rows.append({"k": k, "add_one_bpb": add_one, "kneser_ney_bpb": kn})
        print(f"{k:>2}  {add_one:8.4f}  {kn:10.4f}  {time.time() - t0:7.1f}", flush=True)
    if args.json:
        table = {"split": args.split, "bytes": n_bytes, "rows": rows}
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
