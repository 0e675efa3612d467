"""Scheduler load on a real Slurm: sbatch, sacct and squeue calls for a campaign of 200 trials with
50 outstanding at once, against one sbatch per trial and one status call per trial per poll.

    python benchmarks/bench_scheduler.py                   # 200 trials / 50 outstanding; naive 100
    python benchmarks/bench_scheduler.py --full            # the naive pattern at 200 trials too
    python benchmarks/bench_scheduler.py --trials 400 --outstanding 100 --naive-poll-s 2

Needs the single-node test cluster (`make slurm-up`, or `bash tests/slurm/install.sh && bash
tests/slurm/cluster.sh up`); without one it reports `skipped` with the reason.

Every call is counted by wrapper scripts put first on PATH: each logs its name, time and
arguments, then execs the real binary. Both runs use the toy task with a fixed trial length.

- ours: a real `autosci run` campaign with `executor.kind: slurm`, `executor.slurm.max_concurrent`
  = the outstanding count, in `central` mode with random-search agents and as many workers as
  trials outstanding (the executor is what is measured: this is the simplest campaign that keeps
  that many trials out on the toy task's small space);
- the baseline: the pattern of a workflow without arrays — one `sbatch --wrap` per trial, kept at
  the same number outstanding, and at every poll one `squeue -j` per outstanding job (plus one
  `sacct -j` when a job has left the queue, for its final state).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

NAME = "scheduler load"
COUNTED = ("sbatch", "sacct", "squeue", "scontrol")
STATUS = ("sacct", "squeue")
#: The executor's fastest poll (SlurmTrialExecutor.min_poll_s): at most one status call per this
#: many seconds, whatever the number of outstanding jobs, plus one right after each submission.
MIN_POLL_S = 1.0


@dataclass
class Calls:
    """What one run cost the scheduler."""

    how: str
    trials: int
    seconds: float
    max_outstanding: int
    counts: dict[str, int] = field(default_factory=dict)
    #: Distinct job arrays (ours) or jobs (naive) the trials ran in.
    submissions: int = 0
    status_per_min: float = 0.0
    #: Status calls in the busiest 60 seconds.
    status_busiest_min: int = 0
    #: sbatch calls in that same busiest minute (each is followed by one status call).
    sbatch_per_min: float = 0.0


# ---- the cluster and the counting wrappers ---------------------------------------------------------


def cluster_env() -> tuple[Optional[dict[str, str]], str]:
    """The environment that reaches the test cluster (SLURM_CONF from its env file), or the reason
    there is none."""
    env = bl.slurm_env()
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None, "no Slurm commands on this machine (make slurm-up installs and starts a test cluster)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo timed out (is slurmctld running? make slurm-up)"
    if proc.returncode != 0 or not proc.stdout.strip():
        said = (proc.stderr.strip().splitlines() or ["no partition"])[-1]  # sinfo's last word is its reason
        return None, f"no cluster answers sinfo ({said}); make slurm-up starts one"
    return env, ""


def wrappers(bindir: Path, log: Path, env: dict[str, str]) -> dict[str, str]:
    """Scripts named like the Slurm commands that log each call, then exec the real one; the
    environment with them first on PATH."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in COUNTED:
        real = shutil.which(name, path=env.get("PATH"))
        if real is None:
            continue
        script = bindir / name
        script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name} $*" >> {shlex.quote(str(log))}\n'
                          f'exec {shlex.quote(real)} "$@"\n')
        script.chmod(0o755)
    return {**env, "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}"}


def read_calls(log: Path) -> list[tuple[float, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2:
            # the launch check's `sbatch --test-only` submits nothing: counted apart from the submissions
            test_only = parts[1] == "sbatch" and "--test-only" in (parts[2] if len(parts) > 2 else "")
            out.append((float(parts[0]), "sbatch --test-only" if test_only else parts[1]))
    return out


def tally(how: str, calls: list[tuple[float, str]], trials: int, seconds: float, submissions: int,
          max_outstanding: int) -> Calls:
    counts = {name: sum(1 for _, n in calls if n == name) for name in COUNTED}
    status_times = [t for t, n in calls if n in STATUS]
    busiest = bl.max_in_window(status_times, 60.0)
    minutes = max(seconds, 1.0) / 60
    return Calls(how=how, trials=trials, seconds=round(seconds, 1), max_outstanding=max_outstanding, counts=counts,
                 submissions=submissions, status_per_min=round(len(status_times) / minutes, 1),
                 status_busiest_min=busiest, sbatch_per_min=round(counts["sbatch"] / minutes, 1))


# ---- ours: a campaign through arrays ----------------------------------------------------------------


def run_campaign(tmp: Path, env: dict[str, str], trials: int, outstanding: int, trial_s: float) -> Calls:
    task = bl.toy_task(tmp / "task", trial_s)
    folder = tmp / "campaign"
    log = tmp / "calls-ours.log"
    counted = wrappers(tmp / "bin-ours", log, env)
    partition = env.get("AUTOSCI_SLURM_PARTITION", "cpu")
    overrides = [f"campaign.folder={folder}", f"task.path={task}", "campaign.name=bench-sched",
                 "executor.kind=slurm", f"executor.slurm.partition={partition}", "executor.slurm.time_min=5",
                 f"executor.slurm.max_concurrent={outstanding}", f"executor.slurm.array_parallelism={outstanding}",
                 "executor.result_grace_s=5", f"budget.trials={trials}", "budget.wall_clock_min=10",
                 # What is measured is the executor, so the campaign is the one that keeps `outstanding`
                 # trials out most simply: a planner handing random configurations to that many workers
                 # (the toy task's two axes are too small for the offline analysts to fill 200 trials).
                 "coordination.mode=central", "llm.backend=random", "coordination.teams=1",
                 f"coordination.experimenters_per_team={outstanding}",
                 "coordination.poll_interval_s=0.5", "promotion.seeds=3"]
    began = time.time()
    bl.run_cli(bl.autosci_argv("run", bl.TOY_CONFIG, overrides), env=counted, log=tmp / "ours.log", timeout_s=900)
    seconds = time.time() - began
    con = bl.read_db(folder)
    rows = con.execute("select job_id, submitted_at, finished_at from trial where submitted_at is not null").fetchall()
    con.close()
    spans = [(bl.db_time(s) or 0.0, bl.db_time(f) or time.time()) for _, s, f in rows]
    arrays = len({job.split("_", 1)[0] for job, _, _ in rows if job})
    return tally("autosci (arrays, one sacct for all)", read_calls(log), len(rows), seconds, arrays,
                 bl.max_concurrent(spans))


# ---- the baseline: one sbatch per trial, one status call per job per poll -----------------------------


def _sbatch(env: dict[str, str], command: str, folder: Path, partition: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--job-name=naive-bench", f"--partition={partition}",
                          "--time=5", f"--output={folder}/slurm-%j.out", f"--chdir={folder}", "--wrap", command],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().split(";")[0]


def _still_queued(env: dict[str, str], job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True, timeout=60)
    return bool(out.stdout.strip())


def _final_state(env: dict[str, str], job: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip()


def run_naive(tmp: Path, env: dict[str, str], trials: int, outstanding: int, trial_s: float,
              poll_s: float) -> Calls:
    task = bl.toy_task(tmp / "task-naive", trial_s)
    log = tmp / "calls-naive.log"
    counted = wrappers(tmp / "bin-naive", log, env)
    partition = env.get("AUTOSCI_SLURM_PARTITION", "cpu")
    program = task / "program"
    pending = list(range(trials))
    running: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    began = time.time()
    while pending or running:
        while pending and len(running) < outstanding:
            i = pending.pop(0)
            folder = tmp / "naive" / f"{i:04d}"
            folder.mkdir(parents=True)
            command = (f"{shlex.quote(sys.executable)} {program / 'train.py'} --config {program / 'config.yaml'} "
                       f"--seed {i} --artifacts {folder} --metrics {folder / 'metrics.json'}")
            running[_sbatch(counted, command, folder, partition)] = time.time()
        time.sleep(poll_s)
        for job in list(running):  # one status call per outstanding job, every poll
            if not _still_queued(counted, job):
                _final_state(counted, job)
                spans.append((running.pop(job), time.time()))
    return tally("one sbatch per trial, one squeue per job per poll", read_calls(log), trials, time.time() - began,
                 trials, bl.max_concurrent(spans))


# ---- the benchmark ----------------------------------------------------------------------------------


def run(quick: bool = True, *, trials: int = 200, outstanding: int = 50, trial_s: float = 1.0,
        naive_trials: Optional[int] = None, naive_poll_s: float = 5.0, keep: bool = False) -> dict[str, Any]:
    env, problem = cluster_env()
    if env is None:
        return bl.skipped(NAME, problem)
    naive_n = naive_trials or (trials // 2 if quick else trials)
    tmp = Path(tempfile.mkdtemp(prefix="autosci-bench-sched-"))
    try:
        ours = run_campaign(tmp, env, trials, outstanding, trial_s)
        naive = run_naive(tmp, env, naive_n, outstanding, trial_s, naive_poll_s)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(ours, naive, trials, outstanding, trial_s, naive_poll_s)


def report(ours: Calls, naive: Calls, trials: int, outstanding: int, trial_s: float, poll_s: float) -> dict[str, Any]:
    arrays_met = ours.counts["sbatch"] == ours.submissions
    # The executor polls at most once per MIN_POLL_S, and once more right after a submission.
    bound = 60 / MIN_POLL_S
    busiest_allowed = bound + ours.counts["sbatch"]  # never more than one post-submission poll per sbatch
    bounded_met = ours.status_busiest_min <= busiest_allowed
    per_trial = bl.ratio(ours.counts["sbatch"], ours.trials)
    naive_per_trial = bl.ratio(naive.counts["sbatch"], naive.trials)
    rows = [
        bl.row(f"sbatch calls ({ours.trials} trials, up to {ours.max_outstanding} outstanding)",
               f"{ours.counts['sbatch']} for {ours.submissions} arrays ({per_trial or 0:.2f} per trial)",
               f"{naive.counts['sbatch']} for {naive.trials} trials ({naive_per_trial or 0:.2f} per trial)",
               bl.fmt_ratio(bl.ratio(per_trial, naive_per_trial)), "sbatch = array submissions", arrays_met),
        bl.row("status calls (sacct + squeue) per minute, average; busiest minute",
               f"{ours.status_per_min:g}; {ours.status_busiest_min}",
               f"{naive.status_per_min:g}; {naive.status_busiest_min} (poll every {poll_s:g} s, "
               f"{naive.max_outstanding} out)",
               bl.fmt_ratio(bl.ratio(ours.status_per_min, naive.status_per_min)),
               f"bounded: ≤ {bound:g}/min + one per sbatch", bounded_met),
    ]
    summary = (f"{ours.trials} trials in {ours.counts['sbatch']} sbatch calls (= {ours.submissions} arrays) and "
               f"{ours.counts['sacct'] + ours.counts['squeue']} status calls ({ours.status_per_min:g}/min, busiest "
               f"minute {ours.status_busiest_min}); naive: {naive.counts['sbatch']} sbatch for {naive.trials} trials, "
               f"{naive.status_per_min:g} status calls/min; targets "
               + ("met" if arrays_met and bounded_met else "NOT all met"))
    return bl.result(NAME, summary,
                     sizes={"trials": trials, "outstanding": outstanding, "trial_s": trial_s,
                            "naive_trials": naive.trials, "naive_poll_s": poll_s, "min_poll_s": MIN_POLL_S},
                     measured=asdict(ours), baseline=asdict(naive),
                     ratios={"sbatch_per_trial": bl.ratio(per_trial, naive_per_trial),
                             "status_per_min": bl.ratio(ours.status_per_min, naive.status_per_min)},
                     targets={"sbatch_equals_arrays": bl.target("sbatch calls = array submissions",
                                                                ours.counts["sbatch"], arrays_met),
                              "status_bounded": bl.target(f"status calls per minute bounded (≤ {bound:g} + one per "
                                                          "sbatch in any minute)", ours.status_busiest_min,
                                                          bounded_met)},
                     rows=rows)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help="the campaign's trials (default 200)")
    parser.add_argument("--outstanding", type=int, help="trials outstanding at once (default 50)")
    parser.add_argument("--trial-s", dest="trial_s", type=float, help="seconds each trial runs (default 1)")
    parser.add_argument("--naive-trials", dest="naive_trials", type=int,
                        help="trials of the one-sbatch-per-trial baseline (default: half, --full: all)")
    parser.add_argument("--naive-poll-s", dest="naive_poll_s", type=float, help="the baseline's poll interval (5)")
    parser.add_argument("--keep", action="store_true", default=None, help="keep the temporary folders")


if __name__ == "__main__":
    sys.exit(bl.main(run, __doc__, _options))
