"""The protein_fitness task's sealed evaluator (task contract 2): not editable, frozen into each campaign.

Usage (task.yaml's `evaluate`, run by the harness after the training step has ended):
    python evaluate.py --program DIR --artifacts DIR --data DIR --sealed DIR --split K --metrics m.json

It turns the validation variants of split K and the test variants into mutation coordinates, asks the
program's entry point (`run:load`, in a process of its own that receives only those coordinates) for
their predicted fitness, and scores the predictions against labels the training step never had.
Both numbers are the mean of two Spearman rhos, one per part:

* `val_spearman` (the metric, maximize): split K's validation variants, "positions" (every
  development variant that mutates one of the split's validation positions, unseen in training)
  and "random" (10% of the other development variants);
* `test_spearman` (private, never printed): the test variants, "positions" (the six held-out
  positions) and "random" (10% of the rest).

Constant predictions rank nothing and score 0. A program that cannot answer exits 1 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from autosci_hpc.sealed import ProgramCallError, ProgramProcess, predictions, write_metrics

PARTS = ("positions", "random")


def coordinates(mutants: list[str], wildtype: str, alphabet: str) -> dict[str, np.ndarray]:
    """ProteinGym-style mutants ("E22G:D23N") as integer arrays: the only thing the program receives."""
    index = {a: i for i, a in enumerate(alphabet)}
    row, pos, wt, mut = [], [], [], []
    for r, text in enumerate(mutants):
        for token in text.split(":"):
            p = int(token[1:-1]) - 1
            if wildtype[p] != token[0]:
                raise ValueError(f"mutant {text}: wild-type residue does not match")
            row.append(r), pos.append(p), wt.append(index[token[0]]), mut.append(index[token[-1]])
    return {"row": np.array(row, dtype=np.int64), "pos": np.array(pos, dtype=np.int64),
            "wt_aa": np.array(wt, dtype=np.int64), "mut_aa": np.array(mut, dtype=np.int64),
            "n": np.array([len(mutants)], dtype=np.int64)}


def spearman(y: np.ndarray, pred: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(pred) <= 1e-9 * (1.0 + np.max(np.abs(pred))):
        return 0.0  # constant predictions rank nothing
    return float(spearmanr(y, pred).statistic)


def read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    return ([r["mutant"] for r in rows], np.array([float(r["y"]) for r in rows]),
            np.array([r["part"] for r in rows]))


def score(y: np.ndarray, pred: np.ndarray, part: np.ndarray, prefix: str) -> dict[str, float]:
    parts = {p: spearman(y[part == p], pred[part == p]) for p in PARTS}
    return {prefix: float(np.mean(list(parts.values()))), **{f"{prefix}_{p}": parts[p] for p in PARTS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--program", "--artifacts", "--data", "--sealed", "--metrics"):
        p.add_argument(name, required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--entry", default="run:load")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    meta = json.loads((Path(args.data) / "meta.json").read_text())
    sets = {"val_spearman": read(Path(args.sealed) / f"split-{args.split}" / "val.csv"),
            "test_spearman": read(Path(args.sealed) / "test.csv")}
    metrics: dict[str, float] = {}
    try:
        with ProgramProcess(args.program, args.entry, args.artifacts, timeout_s=args.timeout,
                            log=sys.stderr) as program:
            for key, (mutants, y, part) in sets.items():
                pred = predictions(program.call(coordinates(mutants, meta["wildtype"], meta["alphabet"])), len(y))
                metrics.update(score(y, pred, part, key))
    except ProgramCallError as exc:
        print(f"cannot score the program: {exc}", file=sys.stderr)
        return 1
    write_metrics(args.metrics, {**metrics, "split": args.split, "n_val": len(sets["val_spearman"][1]),
                                 "n_test": len(sets["test_spearman"][1])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
