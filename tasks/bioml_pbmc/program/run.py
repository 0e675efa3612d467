"""PBMC cell-type classification: the training driver (not editable by agents).

Usage (the autosci_hpc task contract, version 2):
    python run.py --config config.yaml --overrides overrides.json --seed 0 --data DATA --artifacts DIR

This file reads the visible data of the trial's split (DATA/train.npz, DATA/meta.json), applies the
overrides to config.yaml (an unknown key exits 2), asks the editable model code in train.py for a
fitted model (`fit`) and saves it to DIR/model.pkl. It never sees a validation or test label: the
sealed evaluator scores the model afterwards, calling `load` (below) in a process of its own with
the expression matrix of the cells it wants classified.
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
import sys
import time
import warnings
from pathlib import Path

import yaml



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


# --------------------------------------------------------------------------- training and prediction
def load(artifacts: str):
    """The predict entry point the evaluator calls (in a process of its own): X -> class indices."""
    import pickle

    with open(Path(artifacts) / "model.pkl", "rb") as f:
        model = pickle.load(f)

    def predict(inputs: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.predict(inputs["X"])

    return predict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--overrides", default=None, help="JSON file: dotted key -> value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=os.environ.get("AUTOSCI_DATA", ""),
                   help="this split's visible data (default: $AUTOSCI_DATA)")
    p.add_argument("--artifacts", required=True)
    args = p.parse_args(argv)

    t0 = time.time()
    data_dir = Path(args.data) if args.data else None
    if data_dir is None or not (data_dir / "meta.json").is_file():
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
                import numpy as np

                with np.load(data_dir / "train.npz") as data:
                    X, y = data["X"], data["y"]
                model = train.fit(cfg, X, y, args.seed)
        except bad_config as e:
            raise ConfigError(str(e)) from None
    except (ConfigError, json.JSONDecodeError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import pickle

    with open(Path(args.artifacts) / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    print(f"bioml_pbmc: {train.describe(cfg)}")
    print(f"seed={args.seed}: fit on {len(y)} cells, {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
