"""A trial's run conditions: the one stored record of where and how it ran (`Trial.conditions`).

On a metric that depends on time or hardware (a training run cut off by a time budget), the node, the
accelerator and how many trials shared it move the number more than most ideas do; two runs compared
across different conditions are not a fair pair. The node reports the record with its result
(`execution.conditions.observe`); this module is its only reader: ingestion cleans it (`clean`), the
budget and the report count the GPUs it held (`GPUS`, `gpus_held`), promotion compares two sides
(`key_of`, `differ`), and `describe` words it.

The record holds what the node saw (`host`, `devices`: CUDA_VISIBLE_DEVICES, `slurm_gpus`: the node's GPU
indices Slurm gave the job, `gpu`: the names of the trial's GPUs) and what its executor planned
(`executor`, `slot`, `share`: trials placed on the same GPU(s), this one included, `gpus`: the GPUs it is
charged with, fractional when shared, `ranks`: the processes of its training step in all, `nodes`: the
nodes it spans (the host is its first node's), `ballast`, and `together`: whether the members of its
local GPU gang all arrived before their steps). The share is planned, not counted at launch:
the local executor starts the trials of a GPU together (they wait for each other before their training
steps) and fills its empty places with ballast, and a
Slurm GPU is the job's own, so the plan is what the trial ran next to; a count of trials seen at launch
would differ between two trials of the same batch by the order they happened to start in.

Everything in the record comes from a node, where trial code runs: it is hostile input. `clean` keeps
only the known fields, clips strings and lists, bounds numbers, and never raises.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

#: The field holding the GPUs a trial is charged with (read in SQL by the GPU-hour budget).
GPUS = "gpus"
#: How long a stored string may be, how many items a stored list may hold, and the largest count.
MAX_CHARS = 200
MAX_ITEMS = 16
MAX_COUNT = 4096

_STRINGS = ("host", "devices", "slurm_gpus", "executor")
_COUNTS = ("share", "ranks", "nodes")


def _text(value: object) -> Optional[str]:
    return value[:MAX_CHARS] if isinstance(value, str) else None


def _count(value: object, low: int) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return min(max(value, low), MAX_COUNT)


def _number(value: object) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(min(value, MAX_COUNT))


def clean(raw: object) -> dict[str, Any]:
    """The record as it may be stored: known fields of the right type only, strings clipped to
    MAX_CHARS, the GPU names to MAX_ITEMS, counts within [1, MAX_COUNT] (a slot within [0, ...]); a
    field of the wrong type is dropped, anything that is not a mapping gives {} (not recorded)."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in _STRINGS:
        text = _text(raw.get(key))
        if text is not None:
            out[key] = text
    gpu = raw.get("gpu")
    if isinstance(gpu, (list, tuple)):
        out["gpu"] = [str(g)[:MAX_CHARS] for g in gpu[:MAX_ITEMS] if isinstance(g, (str, int, float))]
    for key in _COUNTS:
        count = _count(raw.get(key), 1)
        if count is not None:
            out[key] = count
    slot = _count(raw.get("slot"), 0)
    if slot is not None:
        out["slot"] = slot
    gpus = _number(raw.get(GPUS))
    if gpus is not None:
        out[GPUS] = gpus
    for flag in ("ballast", "together"):
        if isinstance(raw.get(flag), bool):
            out[flag] = raw[flag]
    return out


def upgrade(conditions: object, environment: object) -> dict[str, Any]:
    """The record of a trial stored (or reported by a node) before the record was one: the executor's
    placement and the node's host, devices and GPU names were kept in its environment, and its old
    conditions counted the trials seen on the slot at launch (`shared`, not carried over: a launch-order
    count, not the planned share). A record that is already whole comes back cleaned."""
    env = environment if isinstance(environment, Mapping) else {}
    placement = env.get("placement") if isinstance(env.get("placement"), Mapping) else {}
    old = conditions if isinstance(conditions, Mapping) else {}
    nested = env.get("conditions") if isinstance(env.get("conditions"), Mapping) else {}
    merged: dict[str, Any] = {"host": env.get("host"), "devices": env.get("cuda_visible_devices"),
                              "slurm_gpus": env.get("slurm_gpus"), "gpu": env.get("gpu")}
    merged.update({k: v for k, v in placement.items() if k != "devices"})
    if "devices" in placement and not isinstance(merged["devices"], str):
        merged["devices"] = placement["devices"]
    for source in (nested, old):
        merged.update({k: v for k, v in source.items() if k != "shared"})
    return clean(merged)


#: Keys of the environment that the record took over (an upgraded environment drops them).
MOVED_FROM_ENVIRONMENT = ("host", "cuda_visible_devices", "slurm_gpus", "gpu", "placement", "conditions")


def gpus_held(conditions: object, default: float) -> float:
    """GPUs a finished trial was charged with (`default`, the config's count, where none was recorded)."""
    value = clean(conditions).get(GPUS)
    return default if value is None else value


def key_of(conditions: object) -> tuple[str, str, int]:
    """What must match for two runs to count as measured under the same conditions: the host, the GPUs'
    names ("" on a CPU) and the planned share of the GPU (0: not recorded, or a CPU trial)."""
    record = clean(conditions)
    gpu = ",".join(record.get("gpu", []))
    return record.get("host", ""), gpu, record.get("share", 0) if gpu else 0


def describe(conditions: object) -> str:
    """`host node1, GPU NVIDIA H200, shared by 4 trials` in one phrase (`host node1 (the first of 2
    nodes), ...` for a trial on several nodes)."""
    if not clean(conditions):
        return "not recorded"
    host, gpu, share = key_of(conditions)
    if not gpu:
        return f"host {host or '?'}, CPU"
    shared = (f"shared by {share} trials" if share > 1 else "alone on it" if share == 1
              else "sharing not recorded")
    if clean(conditions).get("together") is False:
        shared += " (its neighbours did not all start: it ran with fewer)"
    nodes = clean(conditions).get("nodes", 1)
    where = f"{host or '?'} (the first of {nodes} nodes)" if nodes > 1 else host or "?"
    return f"host {where}, GPU {gpu}, {shared}"


def differ(a: list[Any], b: list[Any]) -> Optional[str]:
    """Why two sides of a comparison ran under different conditions (None: the same, or not recorded)."""
    left = {key_of(c) for c in a if clean(c)}
    right = {key_of(c) for c in b if clean(c)}
    if not left or not right or left == right:
        return None
    parts = []
    for label, index in (("host", 0), ("GPU", 1), ("trials sharing the GPU", 2)):
        lvals, rvals = sorted({k[index] for k in left}), sorted({k[index] for k in right})
        if lvals != rvals:
            parts.append(f"{label} {'/'.join(map(str, lvals)) or '-'} vs {'/'.join(map(str, rvals)) or '-'}")
    return "; ".join(parts) or None
