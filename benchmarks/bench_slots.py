"""Slot utilization: how much of the trial slots' wall time runs trials, decentralized vs a sequential loop.

    python benchmarks/bench_slots.py                  # quick: 12 s trials, 1 s decisions, 2 slots
    python benchmarks/bench_slots.py --full           # the full sizes: 60 s trials, 5 s decisions, 4 slots
    python benchmarks/bench_slots.py --trial-s 20 --latency-s 2 --slots 3 --trials 30

Trials have a fixed length (the toy task's `sleep`), agent decisions a simulated LLM latency
(`llm.offline_latency_s`: the offline policy waits that long per decision). Two runs on the same
machine, the same executor (local, `k` slots) and the same task:

- decentralized: a real `autosci run` campaign, agents as their own processes
  (`coordination.agent_processes`) so that they think while trials run;
- the baseline: an autoresearch-style sequential loop — think (the product's own paced
  policy wrapper, the same latency), run one trial on the same executor, read its result, think
  again. `--baseline single` measures the product's single-agent mode (`coordination.mode: single`)
  instead; it replicates candidates on seeds, so it is not the plain think-run loop.

Busy time is read from each trial's own result file (`started_at` → `finished_at` of the program on
the node), so the executor's start-up and the coordinator's reaction count as idle. Two windows:
*steady state*, from the first candidate's start to the last trial's start (while there was work to
hand out: no baseline, discussion or drain), which the target is judged on; and *whole run*, from
the campaign's creation to its end, printed beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

NAME = "slot utilization"
TARGET = 0.97
QUICK = {"trial_s": 12.0, "latency_s": 1.0, "slots": 2, "trials": 16, "seq_trials": 4}
FULL = {"trial_s": 60.0, "latency_s": 5.0, "slots": 4, "trials": 48, "seq_trials": 4}
POLL_S = 0.1  # the coordinator's poll interval in both runs


@dataclass
class Utilization:
    """What one run measured."""

    how: str
    trials: int
    steady: Optional[float]  # busy fraction, first candidate start -> last trial start
    whole: Optional[float]  # busy fraction, start -> end of the run
    steady_window_s: float
    whole_window_s: float
    #: Mean seconds from a trial's submission to its program's start (the executor's start-up).
    start_latency_s: Optional[float]
    #: Idle slot-seconds in the steady window, per trial started in it.
    idle_per_trial_s: Optional[float]


def measure(how: str, spans: list[tuple[float, float, str, Optional[float]]], slots: int,
            whole: tuple[float, float]) -> Utilization:
    """`spans`: (program start, program end, role, submitted at) of every trial of one run."""
    runs = [(a, b) for a, b, _, _ in spans]
    work = [a for a, _, role, _ in spans if role != "baseline"]
    first = min(work) if work else min(a for a, _ in runs)
    steady = (first, max(a for a, _ in runs))
    started_in = sum(1 for a, _ in runs if steady[0] < a <= steady[1])
    busy = bl.busy_fraction(runs, slots, steady)
    idle = None if busy is None or not started_in else (1 - busy) * slots * (steady[1] - steady[0]) / started_in
    latencies = [a - sub for a, _, _, sub in spans if sub is not None]
    return Utilization(how=how, trials=len(spans), steady=busy, whole=bl.busy_fraction(runs, slots, whole),
                       steady_window_s=round(steady[1] - steady[0], 2), whole_window_s=round(whole[1] - whole[0], 2),
                       start_latency_s=sum(latencies) / len(latencies) if latencies else None,
                       idle_per_trial_s=idle)


# ---- the decentralized campaign (and the single-agent mode, which runs the same way) --------------


def campaign_overrides(folder: Path, task: Path, p: dict[str, Any], mode: str, trials: int) -> list[str]:
    return [f"campaign.folder={folder}", f"task.path={task}", f"coordination.mode={mode}",
            "coordination.teams=2", "coordination.analysts_per_team=2",
            # Enough experimenters that every slot has one ready to take the next idea.
            f"coordination.experimenters_per_team={max(1, p['slots'])}",
            "coordination.discussion_rounds=1", "coordination.queue_depth=4",
            # The package default (toy_smoke.yaml, the base file, re-opens discussion after 4).
            "coordination.stagnation_window=10",
            f"coordination.poll_interval_s={POLL_S}", "coordination.agent_processes=true",
            f"llm.offline_latency_s={p['latency_s']}", f"budget.trials={trials}",
            f"executor.local.max_concurrent={p['slots']}", "executor.result_grace_s=1",
            f"task.time_limit_s={p['trial_s'] + 60}", "promotion.seeds=3"]


def run_campaign(tmp: Path, p: dict[str, Any], mode: str, trials: int, cores: int) -> Utilization:
    task = bl.toy_task(tmp / f"task-{mode}", p["trial_s"])
    folder = tmp / f"campaign-{mode}"
    argv, _ = bl.pinned(bl.autosci_argv("run", bl.TOY_CONFIG, campaign_overrides(folder, task, p, mode, trials)),
                        cores)
    bl.run_cli(argv, log=tmp / f"{mode}.log", timeout_s=3600)
    con = bl.read_db(folder)
    created, finished = con.execute("select created_at, finished_at from campaign").fetchone()
    rows = con.execute("select id, role, submitted_at, folder from trial where status in ('succeeded', 'failed') "
                       "order by id").fetchall()
    con.close()
    spans = []
    for _, role, submitted, trial_folder in rows:
        record = json.loads((Path(trial_folder) / "result.json").read_text())["result"]
        spans.append((record["started_at"], record["finished_at"], role, bl.db_time(submitted)))
    whole = (bl.db_time(created) or 0.0, bl.db_time(finished) or time.time())
    return measure(mode, spans, p["slots"], whole)


# ---- the sequential loop: think, run, think, run ------------------------------------------------


class _NextPoint:
    """The loop's 'idea': the next point of a deterministic walk. What it proposes does not matter
    here; how long deciding takes does, and that comes from the product's own pacing wrapper."""

    name = "sequential loop"

    def __init__(self) -> None:
        self.i = 0

    def propose(self) -> dict[str, float]:
        self.i += 1
        return {"x": round(-0.9 + 0.1 * self.i, 3)}


def run_loop(tmp: Path, p: dict[str, Any], trials: int) -> Utilization:
    from autosci_hpc.execution.local import LocalTrialExecutor
    from autosci_hpc.execution.results import read_result
    from autosci_hpc.execution.trial import task_request
    from autosci_hpc.policies.random_search import PacedPolicy
    from autosci_hpc.task import load_task

    task = load_task(bl.toy_task(tmp / "task-loop", p["trial_s"]))
    executor = LocalTrialExecutor(tmp / "loop" / "jobs", max_concurrent=p["slots"],
                                  timeout_min=(p["trial_s"] + 60) / 60 + 1)
    agent: Any = PacedPolicy(_NextPoint(), p["latency_s"])  # type: ignore[arg-type]
    spans: list[tuple[float, float, str, Optional[float]]] = []
    began = time.time()
    for trial_id in range(1, trials + 1):
        overrides = agent.propose()  # think: the simulated LLM call
        folder = tmp / "loop" / "trials" / f"{trial_id:06d}"
        request = task_request(task, tmp / "loop", trial_id=trial_id, folder=folder, snapshot_dir=task.program_dir,
                               overrides=overrides, seed=0, time_limit_s=p["trial_s"] + 60)
        submitted = time.time()
        executor.submit([request])  # run: one trial, then wait for its result as the coordinator would
        while (done := read_result(folder, trial_id)) is None:
            time.sleep(POLL_S)
        spans.append((done.started_at, done.finished_at, "candidate", submitted))
    return measure("sequential loop", spans, p["slots"], (began, time.time()))


# ---- the benchmark -------------------------------------------------------------------------------


def run(quick: bool = True, *, trial_s: Optional[float] = None, latency_s: Optional[float] = None,
        slots: Optional[int] = None, trials: Optional[int] = None, seq_trials: Optional[int] = None,
        baseline: str = "loop", cores: int = 2, keep: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = dict(QUICK if quick else FULL)
    for key, value in (("trial_s", trial_s), ("latency_s", latency_s), ("slots", slots), ("trials", trials),
                       ("seq_trials", seq_trials)):
        if value is not None:
            p[key] = value
    use_single = baseline == "single"
    tmp = Path(tempfile.mkdtemp(prefix="autosci-bench-slots-"))
    try:
        ours = run_campaign(tmp, p, "decentralized", p["trials"], cores)
        if use_single:
            # The baseline champion's seeds first, then the single agent's candidates and replicates.
            theirs = run_campaign(tmp, p, "single", 3 + 3 * p["seq_trials"], cores)
        else:
            theirs = run_loop(tmp, p, p["seq_trials"])
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(p, ours, theirs, cores)


def report(p: dict[str, Any], ours: Utilization, theirs: Utilization, cores: int) -> dict[str, Any]:
    gain = bl.ratio(ours.steady, theirs.steady)
    met = ours.steady is not None and ours.steady >= TARGET
    sizes = {**p, "poll_interval_s": POLL_S, "cores": cores, "baseline": theirs.how,
             "window": "steady state: first candidate start -> last trial start"}
    shape = f"{p['trial_s']:g} s trials, {p['latency_s']:g} s decisions, {p['slots']} slots"
    rows = [
        bl.row(f"slots busy, steady state ({shape}; {ours.trials} vs {theirs.trials} trials)",
               bl.pct(ours.steady), f"{bl.pct(theirs.steady)} ({theirs.how})", bl.fmt_ratio(gain),
               f"≥ {TARGET:.0%} busy", met),
        bl.row("slots busy, whole run (start-up and drain included)", bl.pct(ours.whole), bl.pct(theirs.whole),
               bl.fmt_ratio(bl.ratio(ours.whole, theirs.whole))),
    ]
    summary = (f"decentralized keeps {bl.pct(ours.steady)} of {p['slots']} slots busy in steady state "
               f"({bl.pct(ours.whole)} over the whole run) vs {bl.pct(theirs.steady)} for the {theirs.how}; "
               f"target ≥ {TARGET:.0%} {'met' if met else 'NOT met'} (idle {ours.idle_per_trial_s or 0:.2f} "
               f"slot-s per trial, of which {ours.start_latency_s or 0:.2f} s executor start-up)")
    return bl.result(NAME, summary, sizes=sizes, measured=asdict(ours), baseline=asdict(theirs),
                     ratios={"steady": gain, "whole": bl.ratio(ours.whole, theirs.whole)},
                     targets={"busy_fraction": bl.target(f"≥ {TARGET:.0%} of slot time busy (steady state)",
                                                         ours.steady, met)},
                     rows=rows)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trial-s", dest="trial_s", type=float, help="seconds each trial runs")
    parser.add_argument("--latency-s", dest="latency_s", type=float, help="seconds per agent decision")
    parser.add_argument("--slots", type=int, help="trials at once (executor.local.max_concurrent)")
    parser.add_argument("--trials", type=int, help="the decentralized campaign's trial budget")
    parser.add_argument("--seq-trials", dest="seq_trials", type=int, help="trials of the sequential baseline")
    parser.add_argument("--baseline", choices=["loop", "single"],
                        help="loop (default): think, run, think, run; single: the single-agent mode")
    parser.add_argument("--cores", type=int, help="CPUs the campaign may use (taskset on bigger machines)")
    parser.add_argument("--keep", action="store_true", default=None, help="keep the temporary campaign folders")


if __name__ == "__main__":
    sys.exit(bl.main(run, __doc__, _options))
