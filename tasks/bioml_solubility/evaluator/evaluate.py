"""The bioml_solubility task's sealed evaluator (task contract 2): not editable, frozen into each campaign.

Usage (task.yaml's `evaluate`, run by the harness after the training step has ended):
    python evaluate.py --program DIR --artifacts DIR --sealed DIR --split K --metrics metrics.json

It asks the program's entry point (`run:load`, in a process of its own that receives only SMILES)
to predict the validation fold of split K and the 257 test molecules, then scores the predictions
against labels the training step never had:

* `val_r2` (the metric, maximize): R^2 of log solubility on fold K of the 1025 development
  molecules (205 molecules); `val_rmse` beside it;
* `test_r2` (private, never printed): R^2 on the test molecules; `test_rmse` beside it.

A program that cannot answer exits 1 with one line saying why.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from autosci_hpc.sealed import ProgramCallError, ProgramProcess, encode_strings, predictions, write_metrics


def read(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [r["smiles"] for r in rows], np.array([float(r["y"]) for r in rows])


def scores(y: np.ndarray, pred: np.ndarray, prefix: str) -> dict[str, float]:
    residual = y - pred
    return {f"{prefix}_r2": float(1.0 - np.sum(residual ** 2) / np.sum((y - y.mean()) ** 2)),
            f"{prefix}_rmse": float(np.sqrt(np.mean(residual ** 2)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--program", "--artifacts", "--sealed", "--metrics"):
        p.add_argument(name, required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--entry", default="run:load")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    sets = {"val": read(Path(args.sealed) / f"split-{args.split}" / "val.csv"),
            "test": read(Path(args.sealed) / "test.csv")}
    metrics: dict[str, float] = {}
    try:
        with ProgramProcess(args.program, args.entry, args.artifacts, timeout_s=args.timeout,
                            log=sys.stderr) as program:
            for prefix, (smiles, y) in sets.items():
                pred = predictions(program.call(encode_strings(smiles, "smiles")), len(y))
                metrics.update(scores(y, pred, prefix))
    except ProgramCallError as exc:
        print(f"cannot score the program: {exc}", file=sys.stderr)
        return 1
    write_metrics(args.metrics, {**metrics, "split": args.split, "n_val": len(sets["val"][1]),
                                 "n_test": len(sets["test"][1])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
