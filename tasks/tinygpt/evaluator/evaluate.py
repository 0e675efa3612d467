"""The sealed evaluator of the tinygpt task (task contract 2): not editable, frozen into each campaign.

Usage (task.yaml's `evaluate`, run by the harness after the training step has ended):
    python evaluate.py --program DIR --artifacts DIR --sealed DIR --metrics m.json \
        [--max-tokens N] [--time-budget S] [--batch-size B]

The training step never has the validation or test text. This script builds nothing itself: it
starts the program's entry point `train:load` in a process of its own, which builds the model with
the program's own builder and loads the saved weights (artifacts/model.pt), and from then on
exchanges only arrays with it: windows of bytes in, logits out. The text, the windows, the
causality check and the scoring all stay here, out of the program's reach. (A causal model that
looked its prefix up in the validation text would pass the causality check: only keeping the text
away from the program stops that.)

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
* The window length is the model's context, `block_size` in artifacts/model.json (1..4096).
* Budgets the task declares are checked against the program's training record
  (artifacts/train_stats.json): more than --max-tokens training bytes, or more than --time-budget
  seconds of training (plus 5%), fails the trial. The harness's own clock bounds the training
  step's wall time whatever that record says.

Data files come from the task's prepare step (prepare.py): `<sealed>/val.txt`, `<sealed>/test.txt`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from autosci_hpc.sealed import ProgramCallError, ProgramProcess, write_metrics

VOCAB = 256
VAL_BYTES = 65536
TEST_BYTES = 65536


class EvaluationError(RuntimeError):
    """The model does not honour the evaluation contract (shape, finiteness, causality)."""


def load_split(folder: Path, split: str) -> torch.Tensor:
    """The bytes of one held-out split as a uint8 tensor (CPU)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be val or test, got {split!r}")
    blob = (Path(folder) / f"{split}.txt").read_bytes()
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def _logits(model, idx: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype]) -> torch.Tensor:
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


class RemoteModel:
    """The program's model, running in its own process: `model(idx)` sends windows, gets logits."""

    def __init__(self, program: ProgramProcess) -> None:
        self.program = program

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.program.call({"idx": idx.cpu().numpy().astype(np.int64)})
        if "output" not in out:
            raise EvaluationError(f"the model returned no logits (it returned: {', '.join(out) or 'nothing'})")
        logits = torch.from_numpy(np.asarray(out["output"], dtype=np.float32))
        if not torch.isfinite(logits).all():
            raise EvaluationError("the model returned non-finite logits")
        return logits


def read_json(path: Path, max_bytes: int = 1 << 16) -> dict:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(max_bytes))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path.name}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path.name}: must hold a JSON object")
    return data


def number(data: dict, key: str, source: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"{source}: '{key}' is not a finite number: {value!r}")
    return float(value)


def final_metrics(model, folder: Path, context: int, device: torch.device = torch.device("cpu"),
                  dtype: Optional[torch.dtype] = None, batch_size: int = 64) -> dict:
    """The task's metrics: `val_bpb` (the metric) and `test_bpb` (private: write it, never print it)."""
    val = load_split(folder, "val")
    check_causal(model, context, device, dtype, sample=val)
    return {
        "val_bpb": bits_per_byte(model, val, VAL_BYTES, context, device, dtype, batch_size),
        "test_bpb": bits_per_byte(model, load_split(folder, "test"), TEST_BYTES, context, device,
                                  dtype, batch_size),
        "val_bytes": VAL_BYTES,
        "test_bytes": TEST_BYTES,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--program", "--artifacts", "--sealed", "--metrics"):
        p.add_argument(name, required=True)
    p.add_argument("--entry", default="train:load")
    p.add_argument("--max-tokens", type=int, default=0, help="the task's token budget (0: none)")
    p.add_argument("--time-budget", type=float, default=0.0, help="the task's training-time budget, s (0: none)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per call (does not change the metric)")
    p.add_argument("--bf16", action="store_true", help="the program computes in bfloat16: a looser causality "
                   "tolerance (2e-2 instead of 1e-4)")
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    artifacts = Path(args.artifacts)
    try:
        declared = read_json(artifacts / "model.json")
        context = int(number(declared, "block_size", "model.json"))
        if not 1 <= context <= 4096:
            raise EvaluationError(f"model.json: block_size {context} is outside 1..4096")
        stats = read_json(artifacts / "train_stats.json")
        tokens = number(stats, "tokens", "train_stats.json")
        seconds = number(stats, "train_seconds", "train_stats.json")
        if args.max_tokens and tokens > args.max_tokens:
            raise EvaluationError(f"the program trained on {tokens:,.0f} bytes, over the task's budget of "
                                  f"{args.max_tokens:,}")
        if args.time_budget and seconds > args.time_budget * 1.05:
            raise EvaluationError(f"the program trained for {seconds:.1f} s, over the task's budget of "
                                  f"{args.time_budget:g} s")
        with ProgramProcess(args.program, args.entry, artifacts, timeout_s=args.timeout, log=sys.stderr) as program:
            metrics = final_metrics(RemoteModel(program), Path(args.sealed), context,
                                    dtype=torch.bfloat16 if args.bf16 else None, batch_size=args.batch_size)
    except (EvaluationError, ProgramCallError) as exc:
        print(f"cannot score the program: {exc}", file=sys.stderr)
        return 1
    reported = {k: stats[k] for k in ("steps", "n_params", "train_loss") if isinstance(stats.get(k), (int, float))}
    write_metrics(args.metrics, {**metrics, "context": context, "tokens": tokens, **reported})
    return 0


if __name__ == "__main__":
    sys.exit(main())
