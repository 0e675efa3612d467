"""PBMC cell-type classification: the evaluation harness (not editable by agents).

Usage (the autosci_hpc task contract):
    python evaluate.py --config config.yaml --overrides overrides.json --seed 0 \
        --metrics metrics.json --data DATA_DIR

This file is the measurement, in the shape of a BioML-bench task: it reads the prepared public
split (prepare.py), applies the overrides to config.yaml (an unknown key exits 2), asks the
editable model code in train.py for predictions, cross-validates on the development cells and
grades the test cells with the private labels.

* `val_balanced_accuracy` (the metric, maximize): balanced accuracy (the mean per-class recall,
  so the 6-cell class counts as much as the 168-cell one) averaged over a stratified 5-fold CV of
  the 490 development cells; the fold shuffle depends on --seed.
* `test_balanced_accuracy` (private, never printed): the model is refit on all development cells
  and predicts the 210 test cells; the grader reads their labels from DATA_DIR/private.
"""
from __future__ import annotations

import os

# One core and deterministic BLAS reductions: set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path

import yaml

FOLDS = 5


class ConfigError(Exception):
    """A bad config or override (exit code 2)."""


# --------------------------------------------------------------------------- config
def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """A copy of cfg with dotted-key overrides applied; every key must exist in config.yaml."""
    if not isinstance(overrides, dict):
        raise ConfigError("overrides must be a JSON object mapping dotted keys to values")
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown override key {key!r}: {'.'.join(parts[:i + 1])!r} "
                                  f"is not in config.yaml")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return cfg


# --------------------------------------------------------------------------- data and scoring
def load_data(data_dir: Path):
    import numpy as np

    meta = json.loads((data_dir / "public" / "meta.json").read_text())
    dev = np.load(data_dir / "public" / "dev.npz")
    test = np.load(data_dir / "public" / "test.npz")
    return meta, dev["X"].astype(np.float64), dev["y"], test["X"].astype(np.float64)


def check_predictions(pred, n: int, n_classes: int):
    import numpy as np

    pred = np.asarray(pred)
    if pred.shape != (n,):
        raise ValueError(f"expected {n} predicted labels, got shape {pred.shape}")
    if not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0 or pred.max() >= n_classes:
        raise ValueError(f"predictions must be class indices 0..{n_classes - 1}")
    return pred


def grade(data_dir: Path, pred_test, n_classes: int) -> dict:
    """The private grader: test predictions (in public/test.npz order) against hidden labels."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y = pd.read_csv(data_dir / "private" / "test.csv")["y"].to_numpy()
    pred = check_predictions(pred_test, len(y), n_classes)
    return {"test_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "test_accuracy": float(accuracy_score(y, pred)),
            "test_macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(n_classes)),
                                            zero_division=0))}


# --------------------------------------------------------------------------- run
def run(cfg: dict, seed: int, data_dir: Path) -> tuple[dict, dict]:
    import numpy as np
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    import train  # the editable model code

    meta, X, y, X_test = load_data(data_dir)
    n_classes = len(meta["classes"])
    scores, accs, f1s = [], [], []
    for tr, va in StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(X, y):
        pred = check_predictions(train.fit_predict(cfg, X[tr], y[tr], X[va], seed), len(va), n_classes)
        scores.append(float(balanced_accuracy_score(y[va], pred)))
        accs.append(float(accuracy_score(y[va], pred)))
        f1s.append(float(f1_score(y[va], pred, average="macro", labels=list(range(n_classes)), zero_division=0)))
    pred_test = train.fit_predict(cfg, X, y, X_test, seed)
    public = {
        "val_balanced_accuracy": float(np.mean(scores)),
        "val_balanced_accuracy_sd": float(np.std(scores)),
        "val_fold_balanced_accuracy": scores,
        "val_accuracy": float(np.mean(accs)),
        "val_macro_f1": float(np.mean(f1s)),
        "n_dev": int(len(y)), "cv_folds": FOLDS,
    }
    return public, grade(data_dir, pred_test, n_classes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--overrides", default=None, help="JSON file: dotted key -> value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default="metrics.json")
    p.add_argument("--data", default=os.environ.get("AUTOSCI_DATA", ""),
                   help="the prepared data folder (default: $AUTOSCI_DATA)")
    args = p.parse_args(argv)

    t0 = time.time()
    data_dir = Path(args.data) if args.data else None
    if data_dir is None or not (data_dir / "public" / "meta.json").is_file():
        print(f"error: no prepared data in {args.data or '(no --data, no $AUTOSCI_DATA)'}: run the task's "
              "prepare command (python prepare.py --out DATA_DIR)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        if args.overrides:
            with open(args.overrides) as f:
                cfg = apply_overrides(cfg, json.load(f))
        import train
        bad_config = (ConfigError, getattr(train, "ConfigError", ConfigError))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                public, private = run(cfg, args.seed, data_dir)
        except bad_config as e:
            raise ConfigError(str(e)) from None
    except (ConfigError, json.JSONDecodeError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    print(f"bioml_pbmc: {train.describe(cfg)}")
    print(f"seed={args.seed}: {FOLDS}-fold stratified CV on {public['n_dev']} dev cells")
    print("fold balanced accuracy: " + " ".join(f"{s:.4f}" for s in public["val_fold_balanced_accuracy"]))
    metrics = {**public, **private}
    if not all(math.isfinite(metrics[k]) for k in ("val_balanced_accuracy", "test_balanced_accuracy")):
        print("error: non-finite metric", file=sys.stderr)
        return 1
    with open(args.metrics, "w") as f:  # no timings in here: metrics are bit-reproducible
        json.dump(metrics, f)
    print(f"val_balanced_accuracy={public['val_balanced_accuracy']:.4f} "
          f"(fold sd {public['val_balanced_accuracy_sd']:.4f}; accuracy {public['val_accuracy']:.4f}, "
          f"macro-F1 {public['val_macro_f1']:.4f}), {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
