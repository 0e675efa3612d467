"""The executors a campaign config may name, and the one function that builds the one it names.

The interface (`executors.py`) imports no implementation; the implementations import the interface;
this registry sits above both, as submitit's own plugin list does. A new executor is one entry here.
An implementation is imported only when a campaign asks for it (the SLURM one needs nothing that a
local campaign lacks, but keeping the import lazy keeps `autosci status` quick).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .executors import TrialExecutor


def _local(config: Any, folder: Path, time_limit_s: float) -> TrialExecutor:
    from ..config import ConfigError
    from .gpus import local_nodes_problem, resolve_gpus
    from .local import LocalTrialExecutor

    problem = local_nodes_problem(config)
    if problem:
        raise ConfigError(problem)
    local = config.executor.local
    gpus_per_trial = config.task.gpus or 0  # the task's, resolved when the campaign starts
    return LocalTrialExecutor(folder, local.max_concurrent, timeout_min=time_limit_s / 60 + 1,
                              gpus=resolve_gpus(local.gpus) if gpus_per_trial else [],
                              gpus_per_trial=gpus_per_trial, trials_per_gpu=local.trials_per_gpu)


def _slurm(config: Any, folder: Path, time_limit_s: float) -> TrialExecutor:
    from .slurm import SlurmTrialExecutor

    return SlurmTrialExecutor.from_config(folder, config.executor.slurm, job_name=f"autosci-{config.campaign.name}",
                                          time_limit_s=time_limit_s, gpus_per_trial=config.task.gpus or 0,
                                          nodes=config.task.nodes or 1)


#: `executor.kind` -> how to build that executor from a campaign config.
EXECUTORS: dict[str, Callable[[Any, Path, float], TrialExecutor]] = {"local": _local, "slurm": _slurm}


def make_executor(config: Any, folder: Path, time_limit_s: float) -> TrialExecutor:
    """The executor a campaign config asks for. Its `capacity` is the one figure of how many trials
    may be outstanding at once: the coordinator and the agents both read it from here."""
    kind = config.executor.kind
    if kind not in EXECUTORS:
        raise ValueError(f"executor.kind={kind!r}: no such executor (known: {', '.join(sorted(EXECUTORS))})")
    return EXECUTORS[kind](config, folder, time_limit_s)
