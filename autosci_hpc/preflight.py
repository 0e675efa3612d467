"""Checks a campaign launch makes before its folder exists: the task's overrides, the API key, the cluster.

Each mistake is one `ConfigError` naming the key or file and what to do, so `autosci run` prints one
line, exits non-zero and leaves nothing behind (no campaign folder, no state.db). A cluster that
refuses the trials' sbatch options is asked with `sbatch --test-only`, which submits nothing.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable, Optional, Sequence

from .config import CampaignConfig, ConfigError
from .task import TaskSpec, unknown_keys

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

#: Words of an sbatch refusal -> the setting that most likely caused it.
REFUSALS = (
    ("feature", "executor.slurm.additional.constraint"),
    ("accounting/qos policy", "executor.slurm.qos, max_concurrent, array_parallelism (the account's limits)"),
    ("account", "executor.slurm.account"),
    ("partition", "executor.slurm.partition"),
    ("qos", "executor.slurm.qos"),
    ("generic resource", "executor.slurm.gres"),
    ("gres", "executor.slurm.gres"),
    ("time limit", "executor.slurm.time_min"),
    ("memory", "executor.slurm.mem_gb"),
    ("node count", "task.nodes (the nodes a trial spans) or executor.slurm.partition"),
    ("node configuration is not available", "executor.slurm (gres, cpus_per_task, mem_gb, additional) or "
                                            "task.gpus / task.nodes"),
)


def _run(argv: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


def check_launch(config: CampaignConfig, task: TaskSpec, runner: Runner = _run) -> None:
    """Every check below, in order; raises the first mistake as a `ConfigError`."""
    check_campaign_folder(config)
    check_task_overrides(config, task)
    check_api_key(config)
    if config.executor.kind == "slurm":
        gpus = config.task.gpus if config.task.gpus is not None else task.gpus
        nodes = config.task.nodes if config.task.nodes is not None else task.nodes
        check_slurm(config, runner, gpus=gpus or 0, nodes=nodes or 1)


def check_campaign_folder(config: CampaignConfig) -> None:
    """The campaign folder is a folder (or does not exist yet) and the nearest existing folder above it is
    one this user may write in: where it cannot be made, nothing starts."""
    folder = config.campaign_folder()
    key = "campaign.folder" if config.campaign.folder else "campaign.root"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}: {folder} exists and is not a folder; name a folder for the campaign")
    above = folder
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{key}: {above} is not a folder, so {folder} cannot be made in it")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {above} is not writable by this user, so {folder} cannot be made")


def check_task_overrides(config: CampaignConfig, task: TaskSpec) -> None:
    known = task.base_config()
    unknown = unknown_keys(known, config.task.overrides)
    if unknown:
        raise ConfigError(f"task.overrides: unknown key(s) {', '.join(sorted(unknown))} for task {task.name} "
                          f"(its config.yaml has: {', '.join(sorted(known))}); fix or remove them")


def check_api_key(config: CampaignConfig) -> None:
    """The key file (present, private, not empty) or the environment variable the backend needs."""
    if config.llm.backend in ("anthropic", "openai"):
        from .llm.keys import resolve_api_key

        resolve_api_key(config.llm)


def sbatch_flags(config: CampaignConfig, gpus: int = 0, nodes: int = 1) -> list[str]:
    """The sbatch options of a trial's job of `gpus` GPUs on `nodes` nodes, as the SLURM executor asks
    for them."""
    from .execution.slurm import trial_resources

    slurm = config.executor.slurm
    flags = [f"--cpus-per-task={slurm.cpus_per_task}", f"--mem={_mem(slurm.mem_gb)}",
             f"--time={slurm.time_min}"]
    for key in ("partition", "account", "qos", "gres"):
        if getattr(slurm, key):
            flags.append(f"--{key}={getattr(slurm, key)}")
    resources = trial_resources(slurm, gpus, nodes)
    for param, flag in (("slurm_gres", "gres"), ("nodes", "nodes"), ("tasks_per_node", "ntasks-per-node")):
        if param in resources:
            flags.append(f"--{flag}={resources[param]}")
    for key, value in slurm.additional.items():
        name = str(key).replace("_", "-")
        flags.append(f"--{name}" if value is True else f"--{name}={value}")
    return flags


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def controller(runner: Runner = _run) -> tuple[Optional[bool], str]:
    """Whether a SLURM controller answers `sinfo`: (True, its partitions), (False, sinfo's error), or
    (None, why sinfo could not be run at all)."""
    from .execution.slurm import clean_slurm_env

    try:
        with clean_slurm_env():
            answer = runner(["sinfo", "--noheader", "--format=%P"])
    except FileNotFoundError:
        return None, "`sinfo` is not on PATH"
    except subprocess.TimeoutExpired:
        return False, "no answer within 30 s"
    if answer.returncode != 0:
        return False, _first_line(answer)
    return True, ", ".join(line.strip() for line in (answer.stdout or "").splitlines() if line.strip())


def check_slurm(config: CampaignConfig, runner: Runner = _run, *, gpus: int = 0, nodes: int = 1) -> None:
    """A controller answers (`sinfo`), and it accepts the options of the trials' jobs, their GPUs and nodes
    included (`sbatch --test-only`)."""
    from .execution.slurm import clean_slurm_env

    answers, detail = controller(runner)
    if answers is None:
        raise ConfigError(f"executor.kind=slurm: {detail}, so there is no SLURM here to submit to; "
                          "run `autosci doctor` to see what this machine has, or use executor.kind=local")
    if not answers:
        raise ConfigError(f"executor.kind=slurm: no SLURM controller answered (sinfo: {detail}); "
                          "run `autosci doctor` and `sinfo` to check the cluster, or use executor.kind=local")
    argv = ["sbatch", "--test-only", "--job-name=autosci-check", "--output=/dev/null",
            *sbatch_flags(config, gpus, nodes), "--wrap=true"]
    try:
        with clean_slurm_env():
            tried = runner(argv)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"executor.kind=slurm: `sbatch --test-only` could not run ({type(exc).__name__}); "
                          "run `autosci doctor` to check the SLURM commands") from None
    if tried.returncode != 0:
        raise ConfigError(refusal_line(_first_line(tried), config))


def refusal_line(message: str, config: Optional[CampaignConfig] = None) -> str:
    """One line for an sbatch refusal, naming the setting to change."""
    setting = refused_setting(message, config)
    return (f"sbatch refused the trials' job options: {message}; check {setting} "
            "(`key=null` unsets a setting, `executor.slurm.additional={}` clears the extra options)")


def refused_setting(message: str, config: Optional[CampaignConfig] = None) -> str:
    lower = message.lower()
    if config is not None:  # an extra option named in the message
        for key, value in config.executor.slurm.additional.items():
            if str(key).lower() in lower:
                return f"executor.slurm.additional.{key}={value}"
    for words, setting in REFUSALS:
        if words in lower:
            if config is not None and setting.startswith("executor.slurm.additional."):
                name = setting.rsplit(".", 1)[1]
                if name in config.executor.slurm.additional:
                    return f"{setting}={config.executor.slurm.additional[name]}"
            elif config is not None and setting.count(".") == 2 and " " not in setting:
                value = getattr(config.executor.slurm, setting.rsplit(".", 1)[1], None)
                if value not in (None, ""):
                    return f"{setting}={value}"
            return setting
    return "executor.slurm (partition, account, qos, gres, additional)"


def submission_line(error: BaseException, config: Optional[CampaignConfig] = None) -> str:
    """One line for a submission that sbatch refused during the campaign (the executor's error wraps
    sbatch's whole output): its reason and the setting to change."""
    text = str(error)
    reasons = [line.split("error: ", 1)[1].strip() for line in text.splitlines() if "error: " in line]
    if reasons:
        reason = reasons[-1]
    else:
        reason = text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    reason = reason.replace("Batch job submission failed: ", "")[:300]
    return refusal_line(reason, config)


def _first_line(result: Any) -> str:
    text = ((result.stderr or "").strip() or (result.stdout or "").strip()
            or f"exit status {result.returncode}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # sbatch says "sbatch: error: Batch job submission failed: <reason>": the reason is the last line.
    line = lines[-1] if lines else text
    for prefix in ("sbatch: error: ", "sinfo: error: ", "Batch job submission failed: ",
                   "allocation failure: "):
        line = line.replace(prefix, "")
    return line[:300]
