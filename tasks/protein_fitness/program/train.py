"""Protein fitness: the model code agents improve (features and regressor).

run.py (not editable) calls two functions, in the training step and again (make_features and the
model's predict) in a process of its own when the sealed evaluator asks for predictions:

* ``make_features(cfg, variants) -> X``: one row per variant, as a numpy array or a scipy sparse
  matrix; it must not depend on which variants are passed together. `variants` holds the
  mutations in coordinate form: mutation k is (row[k], pos[k], wt_aa[k], mut_aa[k]), with 0-based
  positions and amino acids as indices into `variants.alphabet`; `variants.wildtype` is the
  wild-type sequence.
* ``fit(cfg, X_train, y_train, dy_train, seed) -> model``, any picklable object (defined in this
  file) with ``model.predict(X) -> predictions``; dy_train is each training variant's measurement
  error (standard error of y).

Raise ConfigError for a bad config value (the run exits 2). Keep it deterministic for a seed.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


class ConfigError(Exception):
    pass


# Amino-acid property scales (one value per residue of ALPHABET's order, before standardizing).
_SCALES = {
    # Kyte & Doolittle 1982 hydropathy
    "hydropathy": dict(A=1.8, R=-4.5, N=-3.5, D=-3.5, C=2.5, Q=-3.5, E=-3.5, G=-0.4, H=-3.2, I=4.5,
                       L=3.8, K=-3.9, M=1.9, F=2.8, P=-1.6, S=-0.8, T=-0.7, W=-0.9, Y=-1.3, V=4.2),
    # Zamyatnin 1972 residue volume (A^3)
    "volume": dict(A=88.6, R=173.4, N=114.1, D=111.1, C=108.5, Q=143.8, E=138.4, G=60.1, H=153.2,
                   I=166.7, L=166.7, K=168.6, M=162.9, F=189.9, P=112.7, S=89.0, T=116.1, W=227.8,
                   Y=193.6, V=140.0),
    # net charge at pH 7
    "charge": dict(A=0, R=1, N=0, D=-1, C=0, Q=0, E=-1, G=0, H=0, I=0, L=0, K=1, M=0, F=0, P=0, S=0,
                   T=0, W=0, Y=0, V=0),
    # Grantham 1974 polarity
    "polarity": dict(A=8.1, R=10.5, N=11.6, D=13.0, C=5.5, Q=10.5, E=12.3, G=9.0, H=10.4, I=5.2,
                     L=4.9, K=11.3, M=5.7, F=5.2, P=8.0, S=9.2, T=8.6, W=5.4, Y=6.2, V=5.9),
    # Pace & Scholtz 1998 helix propensity (kcal/mol relative to Ala; higher = less helical)
    "helix": dict(A=0.0, L=0.21, R=0.21, M=0.24, K=0.26, Q=0.39, E=0.40, I=0.41, W=0.49, S=0.50,
                  Y=0.53, F=0.54, H=0.61, V=0.61, N=0.65, T=0.66, C=0.68, D=0.69, G=1.00, P=3.16),
    # Chou & Fasman beta-sheet propensity
    "sheet": dict(A=0.83, R=0.93, N=0.89, D=0.54, C=1.19, Q=1.10, E=0.37, G=0.75, H=0.87, I=1.60,
                  L=1.30, K=0.74, M=1.05, F=1.38, P=0.55, S=0.75, T=1.19, W=1.37, Y=1.47, V=1.70),
}
SCALE_SETS = {
    "none": [],
    "hydrophobicity": ["hydropathy"],
    "physchem": ["hydropathy", "volume", "charge", "polarity"],
    "all": ["hydropathy", "volume", "charge", "polarity", "helix", "sheet"],
}
SUBSTITUTIONS = ("none", "mutant", "pair")
MODELS = ("ridge", "ridge_hgb")


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


def scale_table(names, alphabet):
    """(20, k) table of standardized property values, rows in `alphabet` order."""
    if not names:
        return np.zeros((len(alphabet), 0))
    table = np.array([[_SCALES[s][a] for s in names] for a in alphabet], dtype=float)
    return (table - table.mean(axis=0)) / table.std(axis=0)


# --------------------------------------------------------------------------- features
def make_features(cfg: dict, variants):
    fe = cfg["features"]
    onehot = _bool(fe["onehot"], "features.onehot")
    scales = SCALE_SETS[_choice(fe["aa_scales"], "features.aa_scales", SCALE_SETS)]
    bins = _int(fe["scale_bins"], "features.scale_bins", 1, 8)
    substitution = _choice(fe["substitution"], "features.substitution", SUBSTITUTIONS)
    pairwise = _bool(fe["pairwise"], "features.pairwise")

    n, length, alphabet = variants.n, variants.length, variants.alphabet
    A = len(alphabet)
    row, pos, wt, mut = variants.row, variants.pos, variants.wt_aa, variants.mut_aa
    ones = np.ones(len(row))
    blocks = []  # order: property changes, pairwise products, substitution counts, one-hot
    table = scale_table(scales, alphabet)
    delta = table[mut] - table[wt]  # (mutations, k): property change of each mutation
    if scales:
        region = np.minimum(bins - 1, pos * bins // length)
        k = table.shape[1]
        cols = (region[:, None] * k + np.arange(k)[None, :]).ravel()
        rows = np.repeat(row, k)
        blocks.append(sparse.csr_matrix((delta.ravel(), (rows, cols)), shape=(n, bins * k)))
    if pairwise:  # product of the property changes of a double mutant's two mutations
        pw_table = table if scales else scale_table(SCALE_SETS["hydrophobicity"], alphabet)
        d = pw_table[mut] - pw_table[wt]
        order = np.argsort(row, kind="stable")
        sorted_rows = row[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1]
        counts = np.diff(np.r_[starts, len(order)])
        has2 = counts >= 2
        prod = np.zeros((n, d.shape[1]))
        prod[sorted_rows[starts[has2]]] = d[order[starts[has2]]] * d[order[starts[has2] + 1]]
        blocks.append(sparse.csr_matrix(prod))
    if substitution == "mutant":  # counts of residues gained and lost, position-free
        blocks.append(sparse.csr_matrix((ones, (row, mut)), shape=(n, A)))
        blocks.append(sparse.csr_matrix((ones, (row, wt)), shape=(n, A)))
    elif substitution == "pair":  # counts of each wt -> mutant substitution type, position-free
        blocks.append(sparse.csr_matrix((ones, (row, wt * A + mut)), shape=(n, A * A)))
    if onehot:  # one indicator per (position, mutant residue)
        blocks.append(sparse.csr_matrix((ones, (row, pos * A + mut)), shape=(n, length * A)))
    if not blocks:
        raise ConfigError("no features: enable features.onehot, aa_scales, substitution or pairwise")
    return sparse.hstack(blocks).tocsr()


# --------------------------------------------------------------------------- models
class Ridge:
    """Linear predictions: X @ coef + offset."""

    def __init__(self, coef, offset):
        self.coef, self.offset = coef, offset

    def predict(self, X):
        return np.asarray(sparse.csr_matrix(X) @ self.coef).ravel() + self.offset


def ridge_fit(X, y, w, alpha) -> Ridge:
    """Weighted ridge regression with an unpenalized intercept, in closed form (sparse-friendly)."""
    X = sparse.csr_matrix(X)
    w = w / w.sum()
    mu = np.asarray(X.T @ w).ravel()
    y_mean = float(w @ y)
    Xw = X.multiply(w[:, None]).tocsr()
    gram = np.asarray((X.T @ Xw).todense()) - np.outer(mu, mu)
    gram[np.diag_indices_from(gram)] += alpha / len(y)
    rhs = np.asarray(Xw.T @ (y - y_mean)).ravel()
    coef = np.linalg.solve(gram, rhs)
    return Ridge(coef, y_mean - mu @ coef)


class RidgeThenTrees:
    """Gradient boosting on [ridge score, the first k (property-change) columns]."""

    def __init__(self, ridge, trees, k):
        self.ridge, self.trees, self.k = ridge, trees, k

    def features(self, X):
        X = sparse.csr_matrix(X)
        return np.column_stack([self.ridge.predict(X), X[:, :self.k].toarray()])

    def predict(self, X):
        return self.trees.predict(self.features(X))


def n_property_columns(cfg: dict) -> int:
    """How many leading columns of make_features' matrix hold property changes (scales, pairwise)."""
    fe = cfg["features"]
    k = len(SCALE_SETS[fe["aa_scales"]])
    return k * int(fe["scale_bins"]) + ((k or 1) if fe["pairwise"] is True else 0)


def fit(cfg: dict, X_train, y_train, dy_train, seed: int):
    m, tg = cfg["model"], cfg["target"]
    name = _choice(m["name"], "model.name", MODELS)
    if _bool(tg["weight_by_error"], "target.weight_by_error"):
        floor = _float(tg["error_floor"], "target.error_floor", positive=True)
        w = 1.0 / (np.nan_to_num(dy_train, nan=np.nanmedian(dy_train)) ** 2 + floor ** 2)
    else:
        w = np.ones(len(y_train))
    alpha = _float(m["alpha"], "model.alpha", positive=True)
    ridge = ridge_fit(X_train, y_train, w, alpha)
    if name == "ridge":
        return ridge
    # ridge_hgb: ridge first, then gradient boosting on [ridge score, property-change columns]; the
    # trees can bend the additive score (global epistasis) and combine the property changes.
    from sklearn.ensemble import HistGradientBoostingRegressor
    trees = HistGradientBoostingRegressor(
        learning_rate=_float(m["learning_rate"], "model.learning_rate", positive=True),
        max_iter=_int(m["max_iter"], "model.max_iter", 1, 2000),
        max_leaf_nodes=_int(m["max_leaf_nodes"], "model.max_leaf_nodes", 2, 512),
        l2_regularization=_float(m["l2"], "model.l2"),
        early_stopping=False, random_state=seed)
    model = RidgeThenTrees(ridge, trees, n_property_columns(cfg))
    trees.fit(model.features(X_train), y_train, sample_weight=w)
    return model


def describe(cfg: dict) -> str:
    fe, m, tg = cfg["features"], cfg["model"], cfg["target"]
    feats = [k for k in ("onehot", "pairwise") if fe[k] is True]
    if fe["aa_scales"] != "none":
        feats.append(f"aa_scales={fe['aa_scales']}x{fe['scale_bins']} bins")
    if fe["substitution"] != "none":
        feats.append(f"substitution={fe['substitution']}")
    if m["name"] == "ridge":
        model = f"ridge(alpha={m['alpha']})"
    else:
        model = (f"ridge(alpha={m['alpha']}) -> hgb(lr={m['learning_rate']}, iters={m['max_iter']}, leaves={m['max_leaf_nodes']}, "
                 f"l2={m['l2']})")
    weights = f", weights 1/(dy^2+{tg['error_floor']}^2)" if tg["weight_by_error"] is True else ""
    return f"features: {', '.join(feats) or 'none'}; model={model}{weights}"
