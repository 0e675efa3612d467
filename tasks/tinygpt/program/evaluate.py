"""The fixed evaluation of the tinygpt task. NOT editable: train.py imports it.

Metric: bits per byte (bpb) of the model's next-byte predictions on held-out text,
    bpb = sum over scored bytes of -log2 p(byte | preceding bytes in its window) / scored bytes.

* `val_bpb` scores the first VAL_BYTES bytes of the validation play (after its first byte);
  `test_bpb` the first TEST_BYTES bytes of the private test play, the same way. The number of
  scored bytes never depends on the model or its context length, so every program is measured on
  the same bytes.
* The text is cut into consecutive non-overlapping windows of `context` bytes; inside a window a
  byte is predicted from the bytes before it in that window (a byte at window position j sees j
  bytes of context). Every scored byte is scored exactly once.
* The model is called as `model(idx)` with `idx` a LongTensor (batch, T), T <= context, of byte
  values 0..255, and must return logits of shape (batch, T, 256). It must be causal: before
  scoring, `check_causal` changes one input byte and requires that the logits of every earlier
  position stay the same (a model that peeks at the bytes it predicts is refused).
* Probabilities come from a float32 log-softmax of the logits, summed in float64.

Data files come from the task's prepare step (prepare.py): `<data>/train.txt`, `val.txt`,
`test.txt`. The folder is the `--data` argument of train.py or else the AUTOSCI_DATA variable.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

VOCAB = 256
VAL_BYTES = 65536
TEST_BYTES = 65536
SPLITS = ("train", "val", "test")


class EvaluationError(RuntimeError):
    """The model does not honour the evaluation contract (shape, finiteness, causality)."""


def data_folder(path: Optional[str] = None) -> Path:
    folder = path or os.environ.get("AUTOSCI_DATA", "")
    if not folder:
        raise FileNotFoundError("no data folder: pass --data DIR or set AUTOSCI_DATA "
                                "(run `python prepare.py DIR` first)")
    folder_path = Path(folder)
    missing = [f"{s}.txt" for s in SPLITS if not (folder_path / f"{s}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"data folder {folder_path} lacks {', '.join(missing)} "
                                "(run `python prepare.py DIR` first)")
    return folder_path


def load_split(folder: Path, split: str) -> torch.Tensor:
    """The bytes of one split as a uint8 tensor (CPU)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    blob = (Path(folder) / f"{split}.txt").read_bytes()
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _logits(model, idx: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype]) -> torch.Tensor:
    with _autocast(device, dtype):
        out = model(idx)
    if isinstance(out, tuple):  # tolerate (logits, loss)-style models
        out = out[0]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (*idx.shape, VOCAB):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EvaluationError(f"model(idx) must return logits of shape {(*idx.shape, VOCAB)}, got {shape}")
    return out.float()


@torch.no_grad()
def check_causal(model, context: int, device: torch.device, dtype: Optional[torch.dtype] = None,
                 sample: Optional[torch.Tensor] = None) -> None:
    """Refuse a model whose prediction at a position depends on that position's byte or later ones."""
    if sample is None:
        sample = torch.arange(context, dtype=torch.long) % VOCAB
    x = sample[:context].long().unsqueeze(0).to(device)
    tol = 1e-4 if dtype in (None, torch.float32) else 2e-2
    for p in sorted({context - 1, context // 2, 1}):
        if not 0 < p < x.shape[1]:
            continue
        y = x.clone()
        y[0, p] = (y[0, p] + 1) % VOCAB
        a, b = _logits(model, x, device, dtype), _logits(model, y, device, dtype)
        gap = (a[0, :p] - b[0, :p]).abs().max().item()
        if not gap <= tol:
            raise EvaluationError(f"the model is not causal: changing input byte {p} changed the "
                                  f"logits of earlier positions by {gap:.3g}")


@torch.no_grad()
def bits_per_byte(model, text: torch.Tensor, n_bytes: int, context: int, device: torch.device,
                  dtype: Optional[torch.dtype] = None, batch_size: int = 64) -> float:
    """bpb over bytes 1..n_bytes of `text`, in windows of `context` bytes."""
    if context < 1:
        raise ValueError("context must be >= 1")
    if text.numel() < n_bytes + 1:
        raise ValueError(f"the text has {text.numel()} bytes, fewer than the {n_bytes + 1} needed")
    data = text[: n_bytes + 1].long()
    starts = list(range(0, n_bytes, context))
    full = [s for s in starts if s + context <= n_bytes]
    rest = [s for s in starts if s + context > n_bytes]
    total, scored = 0.0, 0
    for i in range(0, len(full), batch_size):
        chunk = full[i:i + batch_size]
        x = torch.stack([data[s:s + context] for s in chunk]).to(device)
        y = torch.stack([data[s + 1:s + 1 + context] for s in chunk]).to(device)
        logp = F.log_softmax(_logits(model, x, device, dtype), dim=-1)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        total += nll.double().sum().item()
        scored += y.numel()
    for s in rest:  # the last, shorter window
        x = data[s:n_bytes].unsqueeze(0).to(device)
        y = data[s + 1:n_bytes + 1].unsqueeze(0).to(device)
        logp = F.log_softmax(_logits(model, x, device, dtype), dim=-1)
        total += (-logp.gather(-1, y.unsqueeze(-1))).double().sum().item()
        scored += y.numel()
    assert scored == n_bytes, (scored, n_bytes)
    bpb = total / (n_bytes * math.log(2))
    if not math.isfinite(bpb):
        raise EvaluationError(f"non-finite bits per byte ({bpb})")
    return bpb


def final_metrics(model, folder: Path, context: int, device: torch.device,
                  dtype: Optional[torch.dtype] = None, batch_size: int = 64) -> dict:
    """The task's metrics: `val_bpb` (the metric) and `test_bpb` (private: write it, never print it)."""
    was_training = model.training
    model.eval()
    try:
        val = load_split(folder, "val")
        check_causal(model, context, device, dtype, sample=val)
        metrics = {
            "val_bpb": bits_per_byte(model, val, VAL_BYTES, context, device, dtype, batch_size),
            "test_bpb": bits_per_byte(model, load_split(folder, "test"), TEST_BYTES, context, device,
                                      dtype, batch_size),
            "val_bytes": VAL_BYTES,
            "test_bytes": TEST_BYTES,
        }
    finally:
        model.train(was_training)
    return metrics
