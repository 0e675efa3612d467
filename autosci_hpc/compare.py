"""`autosci compare`: one task, several coordination modes and seeds, one matched budget, one report.

Each arm × seed is an ordinary campaign in its own folder (`OUT/<arm>-s<seed>`), run by the
ordinary coordinator (`autosci coordinate`, agents inline so an offline comparison is
deterministic) in its own process, from the same config files plus three keys: the mode, the
campaign seed and the folder. Everything else — the budget (trials, GPU-hours, LLM dollars, wall
clock), the executor, the promotion rule — is the user's config, identical across arms, which is
what "matched" means here. The executor is whatever the config names: the local one, or SLURM (then
each campaign submits its own arrays and several campaigns may run at once with `--parallel`).

A campaign that already finished is not run again, so an interrupted comparison is resumed by
running the same command; one that stopped half-way resumes from its state.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import CampaignConfig, ConfigError, load_config
from .layout import CampaignLayout

#: An arm is a coordination mode, or a named baseline that is a mode plus a policy.
ARMS: dict[str, list[str]] = {
    "decentralized": ["coordination.mode=decentralized"],
    "central": ["coordination.mode=central"],
    "single": ["coordination.mode=single"],
    # Random search: the single agent's loop with a policy that samples the axes uniformly.
    "random": ["coordination.mode=single", "llm.backend=random"],
}


@dataclass
class Run:
    arm: str
    seed: int
    folder: Path
    overrides: list[str] = field(default_factory=list)
    returncode: Optional[int] = None


def plan(files: Sequence[str], overrides: Sequence[str], arms: Sequence[str], seeds: Sequence[int],
         out: Path) -> list[Run]:
    """The campaigns of a comparison; every config is validated before anything runs."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown)} in --arms; known: {', '.join(ARMS)}")
    runs = []
    for arm in arms:
        for seed in seeds:
            folder = (out / f"{arm}-s{seed}").absolute()
            extra = [*ARMS[arm], f"campaign.seed={seed}", f"campaign.folder={folder}",
                     f"campaign.name={folder.name}"]
            config = load_config(list(files), [*overrides, *extra])  # raises ConfigError naming the key
            _check_llm_matched(config, arm)
            runs.append(Run(arm=arm, seed=seed, folder=folder, overrides=[*overrides, *extra]))
    return runs


def _check_llm_matched(config: CampaignConfig, arm: str) -> None:
    if config.llm.backend not in ("offline", "random") and config.budget.llm_dollars is None:
        raise ConfigError(f"arm '{arm}': LLM agents in a comparison need budget.llm_dollars, so that every "
                          "arm gets the same model budget")


def finished(folder: Path) -> bool:
    """Whether the campaign in `folder` reached its end (then it is not run again)."""
    if not CampaignLayout(folder).database.is_file():
        return False
    from .state import Store
    from .state.lifecycle import CampaignStatus

    store = Store(folder, read_only=True, create=False)
    return store.campaign().status in (CampaignStatus.FINISHED, CampaignStatus.FAILED)


#: `autosci coordinate`'s exit status when another coordinator holds the campaign's lease.
LEASE_HELD_EXIT = 3


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return lines[-1].strip() if lines else f"see {log}"


def run_one(run: Run, files: Sequence[str], log: Path) -> int:
    """One campaign through `autosci coordinate` in a child process; its output goes to `log`."""
    command = [sys.executable, "-m", "autosci_hpc.cli", "coordinate", *files, *run.overrides,
               "--inline-agents", "--no-requeue"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def run_comparison(files: Sequence[str], overrides: Sequence[str], arms: Sequence[str], seeds: Sequence[int],
                   out: Path, *, parallel: int = 1, target: Optional[float] = None,
                   progress: Callable[[str], None] = print) -> Path:
    """Run (or resume) every arm × seed and write `OUT/report.html`; returns its path."""
    runs = plan(files, overrides, arms, seeds, out)
    out.mkdir(parents=True, exist_ok=True)

    def go(run: Run) -> Run:
        if finished(run.folder):
            progress(f"{run.folder.name}: already finished")
            run.returncode = 0
            return run
        progress(f"{run.folder.name}: running")
        run.returncode = run_one(run, files, out / "logs" / f"{run.folder.name}.log")
        progress(f"{run.folder.name}: exit {run.returncode}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        done = list(pool.map(go, runs))
    refused = [r for r in done if r.returncode == LEASE_HELD_EXIT]
    if refused:
        from .state.lease import LeaseHeld

        # Each campaign's coordinator takes its lease: one that another command coordinates is not
        # run twice, and the comparison is not reported on half-run arms.
        lines = [_last_line(out / "logs" / f"{r.folder.name}.log") for r in refused]
        raise LeaseHeld("; ".join(lines))
    failed = [r for r in done if not CampaignLayout(r.folder).database.is_file()]
    if failed:
        names = ", ".join(f"{r.folder.name} (see {out / 'logs' / (r.folder.name + '.log')})" for r in failed)
        raise RuntimeError(f"no campaign state for {names}")
    from .report.html import write_report

    report = write_report([r.folder for r in done], CampaignLayout(out).report_html, target=target)
    for line in summary_lines([r.folder for r in done]):
        progress(line)
    return report


def summary_lines(folders: Sequence[Path]) -> list[str]:
    """Per mode, the final champions' mean over its campaigns with its 95% interval, and per campaign the
    final champion with its own interval over seeds: no comparison is shown without its uncertainty."""
    from .report import metrics
    from .report.load import load_campaign

    datas = [load_campaign(Path(f)) for f in folders]
    if not datas:
        return []
    name = datas[0].metric
    lines = []
    for mode in sorted({d.arm for d in datas}):
        finals = [metrics.final_metric(d) for d in datas if d.arm == mode]
        interval = metrics.mean_interval(finals)
        shown = (f"{interval[0]:.4g} (95% CI [{interval[1]:.4g}, {interval[2]:.4g}], {len(finals)} campaigns)"
                 if interval else f"{finals[0]:.4g} (1 campaign: no interval across campaigns)")
        lines.append(f"{mode}: final {name} {shown}")
        for data in (d for d in datas if d.arm == mode):
            own = metrics.final_interval(data)
            lines.append(f"  {data.label}: {metrics.final_metric(data):.4g}"
                         + (f" (95% CI [{own[0]:.4g}, {own[1]:.4g}], {own[2]} seeds)" if own else ""))
    return lines
