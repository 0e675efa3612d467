"""Prepare the PBMC cell-type data: scanpy's bundled pbmc68k_reduced, split into public and private.

Usage (task.yaml's `prepare`, run once per campaign with cwd = the task folder):
    python prepare.py --out DATA_DIR

The data is `10x_pbmc68k_reduced.h5ad`, a file inside the scanpy wheel (what
`scanpy.datasets.pbmc68k_reduced()` reads); nothing is downloaded. This script only locates the
file (it does not import scanpy) and reads it with h5py, or with anndata when h5py cannot.

It writes (task contract 2: the training step gets one visible split, the evaluator the rest):
  DATA_DIR/visible/split-k/meta.json   genes, class names, counts
  DATA_DIR/visible/split-k/train.npz   X (cells x genes, log-normalized expression), y (class index), cell
  DATA_DIR/sealed/split-k/val.npz      X, y, cell: split k's validation cells (for the evaluator only)
  DATA_DIR/sealed/test.npz             X, y, cell: the test cells (for the evaluator only)
  DATA_DIR/provenance.json             source, version, license, citation, sha256 of the source file

The split is fixed: a stratified 30% of the 700 cells is the test set (sklearn train_test_split,
random_state=20240501); the other 490 are cut into 5 stratified folds (StratifiedKFold, shuffled,
random_state=20240502), and split k validates on fold k and trains on the other four.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path

FILE = "10x_pbmc68k_reduced.h5ad"
INSTALL = "pip install scanpy (or, to skip its dependencies: pip install --no-deps scanpy h5py)"
SPLIT_STATE = 20240501
TEST_FRACTION = 0.3
SPLITS = 5
FOLD_STATE = 20240502


def fail(message: str) -> None:
    print(f"prepare: {message}", file=sys.stderr)
    sys.exit(1)


def locate() -> tuple[Path, str]:
    spec = importlib.util.find_spec("scanpy")
    if spec is None or not spec.submodule_search_locations:
        fail(f"scanpy is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / FILE
    if not path.is_file():
        fail(f"{path} is missing from the installed scanpy: reinstall it ({INSTALL})")
    try:
        version = metadata.version("scanpy")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return path, version


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_h5ad(path: Path):
    """(X log-normalized cells x genes, genes, labels as strings, cell ids) from the h5ad file."""
    import numpy as np

    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is not None:
        from scipy import sparse

        with h5py.File(path, "r") as f:
            obs = f["obs"]
            if isinstance(obs, h5py.Dataset):  # the old (anndata < 0.7) layout this file uses
                table = obs[:]
                categories = _text(f["uns/bulk_labels_categories"][:])
                labels = [categories[i] for i in table["bulk_labels"]]
                cells = _text(table["index"])
                raw = f["raw.X"]
                genes = _text(f["raw.var"][:]["index"])
            else:  # the current layout: obs/<column>/{codes,categories}
                column = obs["bulk_labels"]
                categories = _text(column["categories"][:])
                labels = [categories[i] for i in column["codes"][:]]
                cells = _text(obs[obs.attrs.get("_index", "_index")][:])
                raw = f["raw/X"]
                var = f["raw/var"]
                genes = _text(var[var.attrs.get("_index", "_index")][:])
            X = sparse.csr_matrix((raw["data"][:], raw["indices"][:], raw["indptr"][:]),
                                  shape=(len(cells), len(genes))).toarray()
        return X.astype(np.float32), genes, labels, cells
    try:
        import anndata
    except ImportError:
        fail("neither h5py nor anndata is installed to read the .h5ad file: pip install h5py")
    adata = anndata.read_h5ad(path)
    raw = adata.raw.to_adata() if adata.raw is not None else adata
    X = raw.X.toarray() if hasattr(raw.X, "toarray") else np.asarray(raw.X)
    return (X.astype(np.float32), list(raw.var_names), list(adata.obs["bulk_labels"].astype(str)),
            list(adata.obs_names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the campaign's data folder ({data})")
    args = p.parse_args(argv)

    import numpy as np
    from sklearn.model_selection import train_test_split

    source, version = locate()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    X, genes, labels, cells = read_h5ad(source)
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    idx = np.arange(len(y))
    dev, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_STATE)
    dev, test = np.sort(dev), np.sort(test)
    cells_arr = np.array(cells)

    out = Path(args.out)
    (out / "sealed").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "sealed" / "test.npz", X=X[test], y=y[test], cell=cells_arr[test])
    meta = {
        "genes": genes, "classes": classes, "n_dev": int(len(dev)), "n_test": int(len(test)),
        "dev_class_counts": {c: int((y[dev] == i).sum()) for i, c in enumerate(classes)},
        "expression": "log1p of library-size-normalized counts (the file's .raw), 765 highly variable genes",
    }
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=SPLITS, shuffle=True, random_state=FOLD_STATE).split(dev, y[dev])
    for k, (train, val) in enumerate(folds):
        train, val = dev[train], dev[val]
        (out / "visible" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        (out / "sealed" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "visible" / f"split-{k}" / "train.npz", X=X[train], y=y[train],
                            cell=cells_arr[train])
        np.savez_compressed(out / "sealed" / f"split-{k}" / "val.npz", X=X[val], y=y[val], cell=cells_arr[val])
        (out / "visible" / f"split-{k}" / "meta.json").write_text(json.dumps({**meta, "split": k}, indent=1))
    provenance = {
        "source": f"scanpy {version} wheel (PyPI), scanpy/datasets/{FILE} (scanpy.datasets.pbmc68k_reduced())",
        "version": version,
        "license": "scanpy: BSD-3-Clause; the underlying 10x Genomics PBMC 68k data: CC BY 4.0",
        "citation": ("Zheng GXY, Terry JM, Belgrader P, et al. Massively parallel digital transcriptional "
                     "profiling of single cells. Nat Commun 8:14049 (2017). Subsampled and processed by "
                     "Wolf FA, Angerer P, Theis FJ. SCANPY: large-scale single-cell gene expression data "
                     "analysis. Genome Biol 19:15 (2018)."),
        "labels": "obs['bulk_labels']: the cell type of the best-correlated FACS-sorted bulk reference",
        "sha256_source": digest,
        "split": {"test_fraction": TEST_FRACTION, "stratified": True, "random_state": SPLIT_STATE,
                  "dev_folds": SPLITS, "fold_random_state": FOLD_STATE},
        "n_dev": int(len(dev)), "n_test": int(len(test)),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    print(f"prepared pbmc68k_reduced: {len(dev)} dev cells, {len(test)} test cells, {len(genes)} genes, "
          f"{len(classes)} cell types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
