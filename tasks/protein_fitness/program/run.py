"""Protein fitness from a deep mutational scan: the training driver (not editable by agents).

Usage (the autosci_hpc task contract, version 2):
    python run.py --config config.yaml --overrides overrides.json --seed 0 --data DATA --artifacts DIR

This file reads the visible data of the trial's split (DATA/train.csv, DATA/meta.json), applies the
overrides to config.yaml (an unknown key exits 2), asks the editable model code in train.py for
features (`make_features`) and a fitted model (`fit`), and saves the model to DIR/model.pkl. It
never sees a validation or test label: the sealed evaluator scores the model afterwards, calling
`load` (below) in a process of its own with the mutations it wants predicted, in coordinate form.
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
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- data
@dataclass
class Variants:
    """Mutations of n variants in coordinate form: mutation k is (row[k], pos[k], wt_aa[k], mut_aa[k]).

    Positions are 0-based; amino acids are indices into `alphabet`. No labels in here."""
    wildtype: str
    alphabet: str
    n: int
    row: "object"
    pos: "object"
    wt_aa: "object"
    mut_aa: "object"
    n_mut: "object"

    @property
    def length(self) -> int:
        return len(self.wildtype)


def parse_mutants(mutants, wildtype: str, alphabet: str) -> Variants:
    import numpy as np
    import pandas as pd

    tokens = pd.Series(list(mutants), dtype=str).str.split(":").explode()
    row = tokens.index.to_numpy(dtype=np.int64)
    text = tokens.to_numpy(dtype=str)
    wt = np.array([t[0] for t in text])
    mut = np.array([t[-1] for t in text])
    pos = np.array([int(t[1:-1]) - 1 for t in text], dtype=np.int64)
    index = {a: i for i, a in enumerate(alphabet)}
    wt_aa = np.array([index[a] for a in wt], dtype=np.int64)
    mut_aa = np.array([index[a] for a in mut], dtype=np.int64)
    if not all(wildtype[p] == w for p, w in zip(pos, wt)):
        raise ValueError("a mutant's wild-type residue does not match the wild type")
    n = len(mutants)
    return Variants(wildtype, alphabet, n, row, pos, wt_aa, mut_aa, np.bincount(row, minlength=n))


def load_training(data_dir: Path):
    import pandas as pd

    meta = json.loads((data_dir / "meta.json").read_text())
    train = pd.read_csv(data_dir / "train.csv")
    variants = parse_mutants(list(train["mutant"]), meta["wildtype"], meta["alphabet"])
    return meta, train, variants


def variants_from_arrays(inputs: dict, meta: dict) -> Variants:
    """The evaluator's inputs (row, pos, wt_aa, mut_aa, n: integer arrays) as Variants, checked."""
    import numpy as np

    n = int(np.asarray(inputs["n"]).reshape(-1)[0])
    row, pos, wt_aa, mut_aa = (np.asarray(inputs[k], dtype=np.int64) for k in ("row", "pos", "wt_aa", "mut_aa"))
    if not (len(row) == len(pos) == len(wt_aa) == len(mut_aa)) or n < 0:
        raise ValueError("inconsistent mutation arrays")
    return Variants(meta["wildtype"], meta["alphabet"], n, row, pos, wt_aa, mut_aa, np.bincount(row, minlength=n))


def load(artifacts: str):
    """The predict entry point the evaluator calls (in a process of its own): mutations -> predictions."""
    import pickle

    import train

    with open(Path(artifacts) / "model.pkl", "rb") as f:
        saved = pickle.load(f)

    def predict(inputs: dict):
        variants = variants_from_arrays(inputs, saved["meta"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return saved["model"].predict(train.make_features(saved["cfg"], variants))

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
                meta, table, variants = load_training(data_dir)
                X = train.make_features(cfg, variants)
                if X.shape[0] != variants.n:
                    raise ValueError(f"make_features returned {X.shape[0]} rows for {variants.n} variants")
                model = train.fit(cfg, X, table["y"].to_numpy(float), table["dy"].to_numpy(float), args.seed)
        except bad_config as e:
            raise ConfigError(str(e)) from None
    except (ConfigError, json.JSONDecodeError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import pickle

    with open(Path(args.artifacts) / "model.pkl", "wb") as f:
        pickle.dump({"cfg": cfg, "meta": meta, "model": model}, f)
    print(f"protein_fitness [{meta['assay']}] split {meta.get('split', 0)}: {train.describe(cfg)}")
    print(f"seed={args.seed}: fit on {variants.n} variants, {X.shape[1]} features, {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
