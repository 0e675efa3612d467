"""tinygpt: a byte-level GPT trained on Shakespeare, scored by validation bits per byte.

Usage (the autosci_hpc task contract, version 2):
    python train.py --config config.yaml --data DATA --overrides overrides.json --seed 0 --artifacts DIR

* ``config.yaml`` is a nested YAML file; ``overrides.json`` maps dotted config keys (e.g.
  ``"optim.lr"``) to values. An override key that is not in config.yaml, or a bad value, is an
  error (exit code 2).
* DATA is the visible data prepare.py wrote: train.txt only (the validation and test plays are
  sealed: this program never has them). Without --data the AUTOSCI_DATA variable names it.
* The model (everything in this file) is trained on random windows of train.txt for a budget of
  ``train.max_tokens`` tokens (bytes), and/or ``train.time_budget_s`` seconds of training on a GPU
  (the first two steps, which allocate, autotune and compile, are not charged to it). It is saved
  to DIR: model.pt (the weights), model.json (the model config) and train_stats.json.
* The sealed evaluator then calls ``load(DIR)`` (below) in a process of its own: it rebuilds the
  model with ``GPT`` and the saved weights and returns logits for the byte windows the evaluator
  sends. ``val_bpb`` (lower is better) and the private ``test_bpb`` are computed there; the task
  declares the token or time budget and the evaluator checks train_stats.json against it.
* Deterministic on CPU: the same (config, overrides, seed) gives bit-identical weights
  (one thread, deterministic algorithms, a token budget rather than a time budget).
"""
from __future__ import annotations

import os

# One core, and deterministic reductions: set before torch is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse
import contextlib
import copy
import json
import math
import sys
import time

import yaml

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256  # byte values


class ConfigError(Exception):
    """A bad config or override (reported with exit code 2)."""


# --------------------------------------------------------------------------- config
def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """A copy of cfg with dotted-key overrides applied; every key must already exist in cfg."""
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
                if isinstance(node[part], dict):
                    raise ConfigError(f"override key {key!r} names a section, not a value")
                node[part] = value
            else:
                node = node[part]
    return cfg


def _int(v, name, low=None, high=None):
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ConfigError(f"{name} must be in [{low}, {high}], got {v}")
    return v


def _float(v, name, low=None, high=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ConfigError(f"{name} must be in [{low}, {high}], got {v}")
    return float(v)


def _choice(v, name, values):
    if v not in values:
        raise ConfigError(f"{name} must be one of {list(values)}, got {v!r}")
    return v


def _bool(v, name):
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v


def check_config(cfg: dict) -> dict:
    """Validate every value (fail fast with exit 2, before any training). Returns cfg."""
    m, o, t = cfg["model"], cfg["optim"], cfg["train"]
    _choice(cfg["device"], "device", ("cpu", "cuda", "auto"))
    _int(m["n_layer"], "model.n_layer", 1, 64)
    _int(m["n_embd"], "model.n_embd", 8, 8192)
    _int(m["n_head"], "model.n_head", 1, 128)
    if m["n_embd"] % m["n_head"]:
        raise ConfigError(f"model.n_embd ({m['n_embd']}) must be divisible by model.n_head ({m['n_head']})")
    _int(m["block_size"], "model.block_size", 8, 8192)
    _int(m["mlp_ratio"], "model.mlp_ratio", 1, 16)
    _float(m["dropout"], "model.dropout", 0.0, 0.9)
    _bool(m["bias"], "model.bias")
    _bool(m["tie_weights"], "model.tie_weights")
    _float(o["lr"], "optim.lr", 1e-6, 1.0)
    _float(o["min_lr_frac"], "optim.min_lr_frac", 0.0, 1.0)
    _choice(o["schedule"], "optim.schedule", ("cosine", "linear", "constant"))
    _int(o["warmup_steps"], "optim.warmup_steps", 0, 10**7)
    _float(o["weight_decay"], "optim.weight_decay", 0.0, 10.0)
    _float(o["beta1"], "optim.beta1", 0.0, 0.9999)
    _float(o["beta2"], "optim.beta2", 0.0, 0.99999)
    _float(o["grad_clip"], "optim.grad_clip", 0.0, 1e6)
    _int(t["batch_size"], "train.batch_size", 1, 4096)
    _int(t["max_tokens"], "train.max_tokens", 0, 10**13)
    _float(t["time_budget_s"], "train.time_budget_s", 0.0, 10**6)
    if t["max_tokens"] == 0 and t["time_budget_s"] == 0:
        raise ConfigError("set train.max_tokens or train.time_budget_s (both are 0)")
    _choice(t["dtype"], "train.dtype", ("float32", "bfloat16"))
    _bool(t["compile"], "train.compile")
    _int(t["log_every"], "train.log_every", 1, 10**9)
    return cfg


# --------------------------------------------------------------------------- model
class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, ratio: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(n_embd, ratio * n_embd, bias=bias)
        self.proj = nn.Linear(ratio * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, ratio: int, dropout: float, bias: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, ratio, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Pre-norm GPT over bytes: token + learned position embeddings, n_layer blocks, LM head."""

    def __init__(self, m: dict):
        super().__init__()
        self.block_size = m["block_size"]
        n_embd = m["n_embd"]
        self.tok = nn.Embedding(VOCAB, n_embd)
        self.pos = nn.Embedding(self.block_size, n_embd)
        self.drop = nn.Dropout(m["dropout"])
        self.blocks = nn.ModuleList(Block(n_embd, m["n_head"], m["mlp_ratio"], m["dropout"], m["bias"])
                                    for _ in range(m["n_layer"]))
        self.ln_f = nn.LayerNorm(n_embd, bias=m["bias"])
        self.head = nn.Linear(n_embd, VOCAB, bias=False)
        if m["tie_weights"]:
            self.head.weight = self.tok.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * m["n_layer"]))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# --------------------------------------------------------------------------- training
def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA device is available (use device: cpu)")
    return torch.device(name)


def make_optimizer(model: nn.Module, o: dict, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                             fused=device.type == "cuda")


def lr_factor(step: int, progress: float, o: dict) -> float:
    """Multiplier of optim.lr: linear warmup over warmup_steps, then the schedule to min_lr_frac."""
    if step < o["warmup_steps"]:
        return (step + 1) / o["warmup_steps"]
    floor = o["min_lr_frac"]
    progress = min(max(progress, 0.0), 1.0)
    if o["schedule"] == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if o["schedule"] == "linear":
        return floor + (1 - floor) * (1 - progress)
    return 1.0


def train(cfg: dict, seed: int, data: torch.Tensor, device: torch.device, log=None) -> tuple[nn.Module, dict]:
    m, o, t = cfg["model"], cfg["optim"], cfg["train"]
    log = log or (lambda line: print(line, flush=True))
    torch.manual_seed(seed)
    model = GPT(m).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, o, device)
    fwd = torch.compile(model) if t["compile"] else model
    amp = torch.bfloat16 if t["dtype"] == "bfloat16" else None
    B, T = t["batch_size"], m["block_size"]
    tokens_per_step = B * T
    max_steps = t["max_tokens"] // tokens_per_step if t["max_tokens"] else 0
    if t["max_tokens"] and max_steps < 1:
        raise ConfigError(f"train.max_tokens ({t['max_tokens']}) is less than one batch ({tokens_per_step})")
    budget_s = t["time_budget_s"]
    gen = torch.Generator().manual_seed(seed)  # the batches: one stream, independent of the model
    n_windows = data.numel() - T - 1
    offsets = torch.arange(T + 1)
    log(f"model: {m['n_layer']} layers, {m['n_embd']} dims, {m['n_head']} heads, context {T}, "
        f"{n_params / 1e6:.3f}M params; {tokens_per_step} tokens/step, "
        + (f"{max_steps} steps" if max_steps else f"{budget_s:g} s budget") + f" on {device.type}")

    model.train()
    step, t0, trained_s, smooth = 0, time.time(), 0.0, None
    while True:
        progress = max(step / max_steps if max_steps else 0.0, trained_s / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        lr = o["lr"] * lr_factor(step, progress, o)
        for group in opt.param_groups:
            group["lr"] = lr
        ix = torch.randint(n_windows, (B,), generator=gen)
        xy = data[ix.unsqueeze(1) + offsets].long()
        x, y = xy[:, :-1].to(device, non_blocking=True), xy[:, 1:].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o["grad_clip"] > 0:
            nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        opt.step()
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value} at step {step} (lr {lr:.3g})")
        smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
        if device.type == "cuda" and budget_s:
            torch.cuda.synchronize()
        if step <= 2:  # the first steps (allocation, autotuning, compilation) are not charged
            t0 = time.time()
        trained_s = time.time() - t0
        if step % t["log_every"] == 0 or step == max_steps:
            log(f"step {step:5d}  loss {value:.4f}  smoothed {smooth:.4f}  lr {lr:.2e}  "
                f"{max(step - 2, 0) * tokens_per_step / max(trained_s, 1e-9):,.0f} tok/s")
    stats = {"steps": step, "tokens": step * tokens_per_step, "n_params": n_params,
             "train_loss": smooth, "train_seconds": trained_s}
    return model, stats


def describe(cfg: dict) -> str:
    m, o, t = cfg["model"], cfg["optim"], cfg["train"]
    return (f"GPT {m['n_layer']}x{m['n_embd']} ({m['n_head']} heads, context {m['block_size']}, "
            f"dropout {m['dropout']}); AdamW lr {o['lr']:g} {o['schedule']} warmup {o['warmup_steps']} "
            f"wd {o['weight_decay']:g} betas ({o['beta1']:g}, {o['beta2']:g}); "
            f"batch {t['batch_size']}, "
            + " or ".join(([f"{t['max_tokens']:,} tokens"] if t["max_tokens"] else [])
                          + ([f"{t['time_budget_s']:g} s"] if t["time_budget_s"] else [])))


def load_train(path: str) -> torch.Tensor:
    folder = path or os.environ.get("AUTOSCI_DATA", "")
    if not folder or not os.path.isfile(os.path.join(folder, "train.txt")):
        raise FileNotFoundError(f"no train.txt in {folder or '(no --data, no AUTOSCI_DATA)'} "
                                "(run `python prepare.py DIR` first and pass DIR/visible)")
    with open(os.path.join(folder, "train.txt"), "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def save(model: nn.Module, cfg: dict, stats: dict, folder: str) -> None:
    """What the evaluator needs: the weights, the config to rebuild the model with, the record."""
    torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump({"block_size": cfg["model"]["block_size"], "model": cfg["model"], "device": cfg["device"],
                   "dtype": cfg["train"]["dtype"]}, f)
    with open(os.path.join(folder, "train_stats.json"), "w") as f:
        json.dump(stats, f)


def load(artifacts: str):
    """The entry point the evaluator calls, in a process of its own: windows of bytes -> logits.

    It builds the model with GPT and the saved weights; inputs are {"idx": int64 (batch, T)}, the
    answer is float32 logits (batch, T, 256)."""
    torch.set_num_threads(1)
    with open(os.path.join(artifacts, "model.json")) as f:
        saved = json.load(f)
    device = pick_device(saved["device"])
    model = GPT(saved["model"])
    model.load_state_dict(torch.load(os.path.join(artifacts, "model.pt"), map_location="cpu", weights_only=True))
    model.to(device).eval()
    amp = torch.bfloat16 if saved["dtype"] == "bfloat16" else None

    @torch.no_grad()
    def predict(inputs: dict):
        idx = torch.from_numpy(inputs["idx"]).long().to(device)
        with torch.autocast(device_type=device.type, dtype=amp) if amp else contextlib.nullcontext():
            logits = model(idx)
        return logits.float().cpu().numpy()

    return predict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--data", default=None, help="the visible data folder (default: $AUTOSCI_DATA)")
    p.add_argument("--overrides", default=None, help="JSON file: dotted key -> value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", required=True)
    args = p.parse_args(argv)

    t0 = time.time()
    try:
        cfg = load_config(args.config)
        if args.overrides:
            with open(args.overrides) as f:
                cfg = apply_overrides(cfg, json.load(f))
        check_config(cfg)
        device = pick_device(cfg["device"])
    except (ConfigError, json.JSONDecodeError, KeyError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # one core: reproducible, and fair between trials
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:  # GPU: speed first (a time budget is not reproducible anyway)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        data = load_train(args.data)
    except FileNotFoundError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2

    print(f"tinygpt: {describe(cfg)}")
    try:
        model, stats = train(cfg, args.seed, data, device)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    save(model, cfg, stats, args.artifacts)
    print(f"trained {stats['steps']} steps ({stats['tokens']:,} tokens) in {stats['train_seconds']:.1f}s; "
          f"train loss {stats['train_loss'] / math.log(2):.4f} bits/byte, {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
