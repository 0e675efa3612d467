"""Aqueous solubility from molecular structure: the model code agents improve.

run.py (not editable) calls two functions in the training step, and make_features again (with
the model's predict) in a process of its own when the sealed evaluator asks for predictions:

* ``make_features(cfg, smiles) -> X``: one row per molecule, a numpy array; it must not depend
  on which molecules are passed together. RDKit is available.
* ``fit(cfg, X_train, y_train, seed) -> model``: a picklable model (a scikit-learn pipeline, or
  an object defined in this file) whose ``predict(X)`` gives log10 solubility (mol/L).

Raise ConfigError for a bad config value (the run exits 2). Keep it deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

FINGERPRINTS = ("none", "morgan_bits", "morgan_counts")
MODELS = ("ridge", "rf", "svr", "knn")


class ConfigError(Exception):
    pass


def _int(v, name, low, high):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if not low <= int(v) <= high:
        raise ConfigError(f"{name} must be {low}..{high}, got {v!r}")
    return int(v)


def _float(v, name, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _bool(v, name):
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v


def _choice(v, name, options):
    if v not in options:
        raise ConfigError(f"{name} must be one of {list(options)}, got {v!r}")
    return v


def descriptor_functions():
    """Fifteen cheap whole-molecule descriptors (the full RDKit list takes ~10 s here)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors
    from rdkit.Chem import rdMolDescriptors as rd

    return {
        "logp": Crippen.MolLogP, "mr": Crippen.MolMR, "mol_wt": Descriptors.MolWt, "tpsa": rd.CalcTPSA,
        "hbd": rd.CalcNumHBD, "hba": rd.CalcNumHBA, "rotatable": rd.CalcNumRotatableBonds,
        "rings": rd.CalcNumRings, "aromatic_rings": rd.CalcNumAromaticRings, "fsp3": rd.CalcFractionCSP3,
        "heavy_atoms": lambda m: m.GetNumHeavyAtoms(), "heteroatoms": rd.CalcNumHeteroatoms,
        "labute_asa": rd.CalcLabuteASA, "formal_charge": lambda m: Chem.GetFormalCharge(m),
        "halogens": lambda m: sum(a.GetSymbol() in ("F", "Cl", "Br", "I") for a in m.GetAtoms()),
    }


def make_features(cfg: dict, smiles):
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    fe = cfg["features"]
    kind = _choice(fe["fingerprint"], "features.fingerprint", FINGERPRINTS)
    radius = _int(fe["radius"], "features.radius", 1, 4)
    n_bits = _int(fe["n_bits"], "features.n_bits", 64, 8192)
    use_descriptors = _bool(fe["descriptors"], "features.descriptors")
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    if any(m is None for m in mols):
        raise ValueError("a SMILES string did not parse")
    blocks = []
    if kind != "none":
        gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
        fp = gen.GetCountFingerprintAsNumPy if kind == "morgan_counts" else gen.GetFingerprintAsNumPy
        blocks.append(np.array([fp(m) for m in mols], dtype=np.float64))
    if use_descriptors:
        funcs = descriptor_functions()
        blocks.append(np.array([[f(m) for f in funcs.values()] for m in mols], dtype=np.float64))
    if not blocks:
        raise ConfigError("no features: set features.fingerprint or features.descriptors")
    return np.hstack(blocks)


def build_model(cfg: dict, seed: int):
    m = cfg["model"]
    name = _choice(m["name"], "model.name", MODELS)
    if name == "ridge":
        from sklearn.linear_model import Ridge
        return Ridge(alpha=_float(m["alpha"], "model.alpha", positive=True))
    if name == "rf":
        from sklearn.ensemble import RandomForestRegressor
        return RandomForestRegressor(n_estimators=_int(m["n_estimators"], "model.n_estimators", 10, 2000),
                                     max_features=_float(m["max_features"], "model.max_features", positive=True),
                                     n_jobs=1, random_state=seed)
    if name == "svr":
        from sklearn.svm import SVR
        return SVR(C=_float(m["C"], "model.C", positive=True),
                   epsilon=_float(m["epsilon"], "model.epsilon"), gamma="scale")
    from sklearn.neighbors import KNeighborsRegressor
    return KNeighborsRegressor(n_neighbors=_int(m["n_neighbors"], "model.n_neighbors", 1, 100),
                               weights="distance")


def fit(cfg: dict, X_train, y_train, seed: int):
    from sklearn.pipeline import make_pipeline

    model = build_model(cfg, seed)
    if _bool(cfg["features"]["scale"], "features.scale"):
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), model).fit(X_train, y_train)
    return make_pipeline(model).fit(X_train, y_train)


def describe(cfg: dict) -> str:
    fe, m = cfg["features"], cfg["model"]
    feats = []
    if fe["fingerprint"] != "none":
        feats.append(f"{fe['fingerprint']}(r={fe['radius']}, {fe['n_bits']} bits)")
    if fe["descriptors"] is True:
        feats.append("15 descriptors")
    keys = {"ridge": ["alpha"], "rf": ["n_estimators", "max_features"],
            "svr": ["C", "epsilon"],
            "knn": ["n_neighbors"]}.get(m["name"], [])
    hp = ", ".join(f"{k}={m[k]}" for k in keys)
    return f"features: {' + '.join(feats) or 'none'}{', standardized' if fe['scale'] is True else ''}; " \
           f"model={m['name']}({hp})"
