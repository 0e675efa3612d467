"""Coordinator cost at scale: CPU time per trial with 1k, 10k and 100k trials already in the log,
`autosci status` and the agents' context building at those sizes, against Optuna's SQLite storage.

    python benchmarks/bench_coordinator.py                       # 1k, 10k, 100k
    python benchmarks/bench_coordinator.py --sizes 1000,10000 --timed 100

For each size a campaign database is created the normal way (a real `Coordinator` on the toy
task: campaign, agents, snapshot, the baseline run through submit / result file / ingest), then a
history of that many finished trials — with the proposals, critiques, forum posts and events a
campaign leaves per trial — is bulk-inserted with SQLAlchemy core. Then, per timed trial, through
the real code path: an experimenter's candidate is recorded (untimed: agent work), the
coordinator submits it (`Coordinator._submit`: the request and submission writes), the node's
`result.json` is written (untimed: node work), and the coordinator observes and ingests it
(`Coordinator._ingest`: `Monitor.observe`, `ingest`, `Outcomes.react` — the screen, replicates on
seeds 1..n-1, the promotion decision, a new champion for every third candidate). CPU time is
`time.process_time` around the coordinator's calls only; the executor is a stand-in that accepts
jobs and reports them running, so no scheduler time is in the figure.

`autosci status` is timed as the in-process render (queries + rich rendering to text, what the
command does after start-up) and as the whole command in a fresh process (interpreter start-up
and imports included). Context building is what an agent does before each decision: read its row
and `build_view`, then `render_state` to the prompt budget.

Baseline: Optuna's `RDBStorage` on SQLite in the same run, its trials table pre-filled to the same
size (bulk insert into Optuna's own tables), then per trial `study.ask` (creates the trial and its
two parameters) + `study.tell` (its value and state), RandomSampler so that no sampler work is
counted, timed the same way.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

NAME = "coordinator cost at scale"
QUICK_SIZES = (1_000, 10_000, 100_000)
TIMED_TRIALS = 60  # candidates and replicates timed per size (about 40 candidates)
TARGET_MS = 5.0
STATUS_TARGET_MS = 200.0
#: "Flat in the log size": the largest size costs at most this much more per trial than the smallest
#: (timing noise on a shared 2-core machine is a few tens of percent).
FLAT_TOLERANCE = 1.5
CHUNK = 20_000


# ---- an executor that accepts jobs and reports them running ---------------------------------------


def null_executor(folder: Path) -> Any:
    from autosci_hpc.execution.executors import JobState, SubmittedJob, TrialExecutor

    class NullExecutor(TrialExecutor):
        """Jobs are accepted at once and stay RUNNING: results arrive only through result files,
        which is how the coordinator learns of success anyway. No scheduler cost is measured."""

        name = "null"

        @property
        def capacity(self) -> int:
            return 1_000_000

        def submit(self, requests: Sequence[Any]) -> list[Any]:
            self.submit_calls += 1
            return [SubmittedJob(trial_id=r.trial_id, job_id=f"null-{r.trial_id}") for r in requests]

        def states(self, job_ids: Sequence[str]) -> dict[str, Any]:
            return {j: JobState(terminal=False, raw="RUNNING") for j in job_ids}

        def cancel(self, job_ids: Sequence[str]) -> None:
            pass

    return NullExecutor(folder)


# ---- the campaign, created the normal way ---------------------------------------------------------


def new_campaign(folder: Path) -> Any:
    from autosci_hpc.config import load_config
    from autosci_hpc.coordination.coordinator import Coordinator

    config = load_config(None, [f"campaign.folder={folder}", f"task.path={bl.TOY_TASK}", "coordination.teams=2",
                                "coordination.analysts_per_team=2", "coordination.experimenters_per_team=2",
                                "promotion.seeds=3", "promotion.min_delta=0", "budget.trials=10000000",
                                "executor.result_grace_s=0"])
    coordinator = Coordinator(config, folder, executor=null_executor(folder / "jobs"))
    coordinator._start_baseline()
    drive(coordinator, lambda trial: 0.55 + 0.001 * trial.seed)  # the baseline champion, as a campaign makes it
    return coordinator


def write_result(trial: Any, metric: float) -> None:
    """What the node writes when a trial ends (not timed: it is the node's work, not the coordinator's)."""
    from autosci_hpc.execution.results import TrialResult, write_result as write

    now = time.time()
    folder = Path(trial.folder)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder, TrialResult(trial_id=trial.id, attempt=trial.attempt, status="succeeded", metric=metric,
                              test_metric=metric, metrics={"score": metric, "test_score": metric},
                              log_tail=f"toy: seed={trial.seed}\nscore={metric:.6f}", returncode=0,
                              started_at=now - 1.0, finished_at=now,
                              environment={"host": "bench", "python": "3", "packages": {}}))


def drive(coordinator: Any, metric_of: Callable[[Any], float]) -> tuple[float, float, int]:
    """Submit, report and ingest until no trial is created or submitted; the coordinator's CPU
    seconds, its wall seconds, and the trials it ingested."""
    from sqlmodel import select

    from autosci_hpc.state.models import Trial

    cpu = wall = 0.0
    ingested = 0
    while True:
        c0, w0 = time.process_time(), time.perf_counter()
        coordinator._submit()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        with coordinator.store.read() as session:
            running = session.exec(select(Trial).where(Trial.status == "submitted")).all()
        if not running:
            return cpu, wall, ingested
        for trial in running:
            write_result(trial, metric_of(trial))
        c0, w0 = time.process_time(), time.perf_counter()
        coordinator._ingest()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        ingested += len(running)


# ---- a history of n trials, bulk-inserted ---------------------------------------------------------


def fill_history(coordinator: Any, n: int, seed: int = 0) -> dict[str, int]:
    """n finished trials with what a campaign leaves around them: per proposal a candidate (three in
    ten replicated on two more seeds), two critiques, four forum posts, and the events of each step;
    one proposal in five rejected before compute. Metrics stay below the champion's."""
    from sqlmodel import select

    from autosci_hpc.state.models import Agent, Campaign, Critique, DeadEnd, Event, ForumPost, Proposal, Team, Trial

    rng = random.Random(seed)
    store = coordinator.store
    with store.write() as session:
        agents = session.exec(select(Agent)).all()
        analysts = [a.id for a in agents if a.role == "analyst"]
        experimenters = [a.id for a in agents if a.role == "experimenter"]
        teams = []
        for i, focus in enumerate(("x_axis", "y_axis")):
            team = Team(name=f"team-{i + 1}", hypothesis=f"moving {focus} helps", focus=focus, roster=[])
            session.add(team)
            session.flush()
            teams.append(team.id)
        for i, agent in enumerate(agents):
            agent.team_id = teams[i % 2]
            session.add(agent)
        campaign = session.exec(select(Campaign)).one()
        campaign.status = "execution"
        session.add(campaign)
        next_trial = (max(t.id or 0 for t in session.exec(select(Trial)).all())) + 1
        first = session.exec(select(Trial)).first()
        assert first is not None
        snapshot = first.snapshot_id
    start = datetime.now(timezone.utc) - timedelta(days=30)
    proposals: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []
    critiques: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    pid = 0
    env = {"host": "node-17", "python": "3.11.7", "platform": "Linux-6.1-x86_64", "slurm_job_id": "",
           "packages": {"numpy": "2.1.0", "scikit-learn": "1.5.2", "autosci_hpc": "0.1.0"}}
    # where each trial ran, as ingestion stores it (a CPU trial of the SLURM executor)
    ran = {"executor": "slurm", "host": "node-17", "share": 1, "gpus": 0.0, "ranks": 1, "nodes": 1}
    while len(trials) < n:
        pid += 1
        when = start + timedelta(seconds=20 * len(trials))
        team_id, author = teams[pid % 2], analysts[pid % len(analysts)]
        x, y = round(rng.uniform(-1, 1), 4), round(rng.uniform(-1, 1), 4)
        change = f"x={x};y={y}"
        rejected = pid % 5 == 0
        proposals.append(dict(id=pid, author_id=author, team_id=team_id, focus="x_axis", title=f"move x to {x}",
                              rationale="the log suggests the optimum lies there " * 3, overrides={"x": x, "y": y},
                              edits=[], change_signature=change, config_signature=f"{snapshot}|{change}",
                              directions=[f"x@{int((x + 1) * 3)}"], base_champion_id=1,
                              status="rejected" if rejected else "done", outcome="" if rejected else "not_promoted",
                              reject_reason="duplicate of a tried configuration" if rejected else "",
                              claimed_by=None if rejected else experimenters[pid % len(experimenters)],
                              critics=[a for a in analysts if a != author][:2], created_at=when, updated_at=when,
                              discussion_round=0, expected_effect="", falsification=""))
        for critic in [a for a in analysts if a != author][:2]:
            critiques.append(dict(proposal_id=pid, author_id=critic, verdict="approve", reasons="no evidence against",
                                  created_at=when))
            posts.append(dict(kind="critique", title=f"critique of #{pid}", body="no evidence against it " * 4,
                              author_id=critic, team_id=team_id, proposal_id=pid, trial_ids=[], created_at=when))
        posts.append(dict(kind="proposal", title=f"#{pid} move x to {x}", body="rationale " * 30, author_id=author,
                          team_id=team_id, proposal_id=pid, trial_ids=[], created_at=when))
        events += [dict(kind=k, entity="proposal", entity_id=pid, data={}, created_at=when)
                   for k in ("proposal.posted", "proposal.approved" if not rejected else "proposal.rejected")]
        if rejected:
            continue
        seeds = 3 if pid % 10 < 3 else 1
        ids = []
        for seed_ in range(seeds):
            metric = round(rng.uniform(0.2, 0.54), 6)
            trials.append(dict(id=next_trial, proposal_id=pid, team_id=team_id, experimenter_id=proposals[-1]["claimed_by"],
                               role="candidate" if seed_ == 0 else "replicate", group=f"p{pid}", snapshot_id=snapshot,
                               overrides={"x": x, "y": y}, config_signature=f"{snapshot}|{change}", seed=seed_,
                               attempt=0, status="succeeded", failure_class="", failure_reason="",
                               log_tail=f"toy: x={x} y={y} seed={seed_}\nscore={metric}", metric=metric,
                               champion_delta=round(metric - 0.55, 6), test_metric=metric,
                               metrics={"score": metric, "test_score": metric}, executor="slurm",
                               job_id=f"{1000 + pid}_{seed_}", array_index=seed_,
                               folder=f"/campaign/trials/{next_trial:06d}", environment=env, conditions=ran,
                               created_at=when,
                               submitted_at=when, finished_at=when + timedelta(seconds=15), duration_s=15.0))
            events += [dict(kind=k, entity="trial", entity_id=next_trial, data={"metric": metric}, created_at=when)
                       for k in ("trial.submitted", "trial.succeeded")]
            ids.append(next_trial)
            next_trial += 1
        posts.append(dict(kind="result", title=f"#{pid}: keep the champion", body=f"per-seed score: {ids}",
                          author_id=None, team_id=team_id, proposal_id=pid, trial_ids=ids, created_at=when))
        events += [dict(kind=k, entity="proposal", entity_id=pid, data={}, created_at=when)
                   for k in ("proposal.claimed", "proposal.concluded")]
    dead = [dict(signature=f"x@{i}", description=f"x in its {i}th sixth", reason="two outcomes without improvement",
                 evidence_trial_ids=[4, 5], created_at=start, team_id=teams[i % 2]) for i in range(6)]
    with store.write() as session:
        conn = session.connection()
        for model, rows in ((Proposal, proposals), (Trial, trials), (Critique, critiques), (ForumPost, posts),
                            (Event, events), (DeadEnd, dead)):
            for i in range(0, len(rows), CHUNK):
                conn.execute(getattr(model, "__table__").insert(), rows[i:i + CHUNK])
        campaign = session.exec(select(Campaign)).one()
        campaign.trials_submitted += len(trials)
        campaign.trials_finished += len(trials)
        session.add(campaign)
    return {"trials": len(trials), "proposals": len(proposals), "critiques": len(critiques), "forum_posts": len(posts),
            "events": len(events)}


# ---- the timed work ---------------------------------------------------------------------------------


def timed_trials(coordinator: Any, count: int) -> dict[str, float]:
    """Candidates one after another until `count` trials were ingested; every third beats the
    champion on all seeds and is promoted."""
    from sqlmodel import select

    from autosci_hpc.agents.views import current_champion
    from autosci_hpc.state.models import Agent, Proposal, Trial
    from autosci_hpc.task import config_signature

    cpu = wall = 0.0
    done = candidates = 0
    while done < count:
        candidates += 1
        wins = candidates % 3 == 0
        with coordinator.store.write() as session:  # what an experimenter records (not timed)
            champion = current_champion(session)
            assert champion is not None
            agents = session.exec(select(Agent)).all()
            author = next(a for a in agents if a.role == "analyst")
            worker = next(a for a in agents if a.role == "experimenter")
            overrides = {"x": round(0.5 + candidates * 1e-4, 6)}
            signature = config_signature(champion.snapshot_id, overrides)
            proposal = Proposal(author_id=author.id, team_id=worker.team_id, focus="x_axis", title="bench",
                                overrides=overrides, change_signature=f"x={overrides['x']}",
                                config_signature=signature, base_champion_id=champion.id, status="running",
                                claimed_by=worker.id)
            session.add(proposal)
            session.flush()
            session.add(Trial(proposal_id=proposal.id, team_id=worker.team_id, experimenter_id=worker.id,
                              role="candidate", group=f"p{proposal.id}", snapshot_id=champion.snapshot_id,
                              overrides=overrides, config_signature=signature, seed=0))
            seeds = dict(champion.seed_metrics)

        def metric_of(trial: Any) -> float:
            reference = seeds.get(str(trial.seed), 0.55)
            return reference + (0.01 if wins else -0.01)

        c, w, n = drive(coordinator, metric_of)
        cpu, wall, done = cpu + c, wall + w, done + n
    with coordinator.store.read() as session:
        promoted = len(session.exec(select(Proposal).where(Proposal.outcome == "promoted")).all())
    return {"cpu_s_per_trial": cpu / done, "wall_s_per_trial": wall / done, "trials": done,
            "candidates": candidates, "promotions": promoted}


def median_time(fn: Callable[[], Any], repeats: int, budget_s: float = 3.0) -> float:
    """The median of up to `repeats` calls, fewer when they take longer than `budget_s` in all
    (a context build of seconds is not made more true by timing it five times)."""
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def status_render(folder: Path) -> Callable[[], str]:
    """What `autosci status` does after start-up: open read-only, query, render to text."""
    from rich.console import Console

    from autosci_hpc.state import Store
    from autosci_hpc.status import render_status

    def once() -> str:
        store = Store(folder, read_only=True, create=False)
        out = io.StringIO()
        Console(file=out, width=140, force_terminal=False).print(render_status(store))
        store.dispose()
        return out.getvalue()
    return once


def status_command(folder: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "status", str(folder)], cwd=bl.ROOT,
                   capture_output=True, check=True, timeout=120)
    return time.perf_counter() - t0


def context_build(coordinator: Any) -> Callable[[], str]:
    """An agent's look before a decision (`Role._look`) and its prompt's state part."""
    from autosci_hpc.agents.roles import agent_info
    from autosci_hpc.agents.views import build_view
    from autosci_hpc.llm.context import render_state
    from autosci_hpc.state.models import Agent

    def once() -> str:
        with coordinator.store.read() as session:
            agent = session.get(Agent, 1)
            assert agent is not None
            info, view = agent_info(session, agent), build_view(session, coordinator.task)
        return render_state(view, info, coordinator.config.llm.context_tokens)
    return once


# ---- Optuna ---------------------------------------------------------------------------------------


def optuna_per_trial(folder: Path, n: int, count: int) -> dict[str, float]:
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models as om
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    study = optuna.create_study(storage=storage, study_name="bench", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    space: dict[str, BaseDistribution] = {"x": FloatDistribution(-1.0, 1.0), "y": FloatDistribution(-1.0, 1.0)}
    fill_optuna(storage, study._study_id, n, space, om, TrialState)
    values = random.Random(1)

    def one() -> None:
        trial = study.ask(space)
        study.tell(trial, values.uniform(0.0, 1.0))

    one()  # the first call reads the pre-filled trials into Optuna's cache: timed apart
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(count):
        one()
    return {"cpu_s_per_trial": (time.process_time() - c0) / count,
            "wall_s_per_trial": (time.perf_counter() - w0) / count, "trials": count}


def fill_optuna(storage: Any, study_id: int, n: int, space: dict[str, Any], om: Any, state: Any) -> None:
    """n complete trials with two parameters and a value, in Optuna's own tables."""
    from optuna.distributions import distribution_to_json

    rng = random.Random(0)
    when = datetime(2026, 1, 1)
    dist = {name: distribution_to_json(d) for name, d in space.items()}
    engine = storage.engine
    with engine.begin() as conn:
        for lo in range(0, n, CHUNK):
            ids = range(lo + 1, min(n, lo + CHUNK) + 1)
            conn.execute(om.TrialModel.__table__.insert(), [
                {"trial_id": i, "number": i - 1, "study_id": study_id, "state": state.COMPLETE,
                 "datetime_start": when, "datetime_complete": when} for i in ids])
            conn.execute(om.TrialParamModel.__table__.insert(), [
                {"trial_id": i, "param_name": name, "param_value": rng.uniform(-1, 1), "distribution_json": dist[name]}
                for i in ids for name in space])
            conn.execute(om.TrialValueModel.__table__.insert(), [
                {"trial_id": i, "objective": 0, "value": rng.uniform(0, 1), "value_type": om.TrialValueModel.TrialValueType.FINITE}
                for i in ids])


# ---- one size, and the benchmark -------------------------------------------------------------------


def one_size(tmp: Path, n: int, timed: int, repeats: int) -> dict[str, Any]:
    folder = tmp / f"campaign-{n}"
    t0 = time.perf_counter()
    coordinator = new_campaign(folder)
    rows = fill_history(coordinator, n)
    fill_s = time.perf_counter() - t0
    ours = timed_trials(coordinator, timed)
    render = status_render(folder)
    render()  # warm: imports and the first open are start-up, timed by the command below
    status_s = median_time(render, repeats)
    command_s = min(status_command(folder) for _ in range(2))
    look = context_build(coordinator)
    look()
    context_s = median_time(look, repeats)
    optuna_folder = tmp / f"optuna-{n}"
    optuna_folder.mkdir()
    theirs = optuna_per_trial(optuna_folder, n, timed)
    out = {"log_trials": n, "history_rows": rows, "fill_s": round(fill_s, 1), "ours": ours, "optuna": theirs,
           "status_render_s": status_s, "status_command_s": command_s, "context_build_s": context_s,
           "journal_mode": coordinator.store.journal_mode}
    coordinator.store.dispose()
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(optuna_folder, ignore_errors=True)
    return out


def run(quick: bool = True, *, sizes: Any = None, timed: Optional[int] = None,
        repeats: int = 5) -> dict[str, Any]:
    """`sizes`: trial counts already in the log, as "1000,10000", a list, or one number."""
    if isinstance(sizes, (list, tuple)):
        wanted = tuple(int(s) for s in sizes)
    else:
        wanted = tuple(int(s) for s in str(sizes).split(",")) if sizes else QUICK_SIZES
    count = timed or TIMED_TRIALS * (1 if quick else 5)
    tmp = Path(tempfile.mkdtemp(prefix="autosci-bench-coord-"))
    try:
        per_size = [one_size(tmp, n, count, repeats) for n in sorted(wanted)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(per_size, count)


def report(per_size: list[dict[str, Any]], count: int) -> dict[str, Any]:
    small, big = per_size[0], per_size[-1]
    ours_big = big["ours"]["cpu_s_per_trial"]
    optuna_big = big["optuna"]["cpu_s_per_trial"]
    growth = bl.ratio(ours_big, small["ours"]["cpu_s_per_trial"])
    n_big = f"{big['log_trials']:,}"
    targets = {
        "cpu_per_trial": bl.target(f"≤ {TARGET_MS:g} ms CPU per trial at {n_big}", 1000 * ours_big,
                                   1000 * ours_big <= TARGET_MS),
        "flat": bl.target(f"flat: ≤ {FLAT_TOLERANCE:g}× the {small['log_trials']:,}-trial cost at {n_big}", growth,
                          growth is not None and growth <= FLAT_TOLERANCE),
        "below_optuna": bl.target(f"below Optuna's per-trial CPU at {n_big}", bl.ratio(ours_big, optuna_big),
                                  ours_big < optuna_big),
        "status": bl.target(f"autosci status < {STATUS_TARGET_MS:g} ms at {n_big}", 1000 * big["status_render_s"],
                            1000 * big["status_render_s"] < STATUS_TARGET_MS),
    }
    rows = []
    for s in per_size:
        n = f"{s['log_trials']:,}"
        o, b = s["ours"]["cpu_s_per_trial"], s["optuna"]["cpu_s_per_trial"]
        last = s is big
        rows.append(bl.row(f"CPU per trial (submit, ingest, react, promote), {n} in the log", bl.ms(o),
                           f"{bl.ms(b)} (Optuna ask+tell)", bl.fmt_ratio(bl.ratio(o, b)),
                           f"≤ {TARGET_MS:g} ms, below Optuna" if last else "—",
                           (targets["cpu_per_trial"]["met"] and targets["below_optuna"]["met"]) if last else None))
    rows.append(bl.row(f"growth of CPU per trial, {small['log_trials']:,} → {n_big}", bl.fmt_ratio(growth),
                       bl.fmt_ratio(bl.ratio(optuna_big, small["optuna"]["cpu_s_per_trial"])) + " (Optuna)", "—",
                       f"flat (≤ {FLAT_TOLERANCE:g}×)", targets["flat"]["met"]))
    for s in per_size:
        n = f"{s['log_trials']:,}"
        last = s is big
        rows.append(bl.row(f"autosci status, {n} in the log (render; whole command)",
                           f"{bl.ms(s['status_render_s'])}; {bl.ms(s['status_command_s'])}", "—", "—",
                           f"< {STATUS_TARGET_MS:g} ms" if last else "—", targets["status"]["met"] if last else None))
    for s in per_size:
        rows.append(bl.row(f"agent context build (view + prompt state), {s['log_trials']:,} in the log",
                           bl.ms(s["context_build_s"])))
    unmet = [k for k, t in targets.items() if not t["met"]]
    summary = (f"{bl.ms(ours_big)} CPU per trial at {n_big} trials (Optuna {bl.ms(optuna_big)}), "
               f"{bl.fmt_ratio(growth)} the {small['log_trials']:,}-trial cost; status {bl.ms(big['status_render_s'])}, "
               f"context {bl.ms(big['context_build_s'])}; "
               + ("all targets met" if not unmet else f"not met: {', '.join(unmet)}"))
    return bl.result(NAME, summary, sizes={"log_trials": [s["log_trials"] for s in per_size], "timed_trials": count,
                                           "journal_mode": big["journal_mode"]},
                     measured={str(s["log_trials"]): {k: v for k, v in s.items() if k != "optuna"} for s in per_size},
                     baseline={str(s["log_trials"]): s["optuna"] for s in per_size},
                     ratios={str(s["log_trials"]): bl.ratio(s["ours"]["cpu_s_per_trial"],
                                                            s["optuna"]["cpu_s_per_trial"]) for s in per_size},
                     targets=targets, rows=rows)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", help="comma-separated trial counts already in the log (default 1000,10000,100000)")
    parser.add_argument("--timed", type=int, help="trials timed at each size (default 60; --full: 300)")
    parser.add_argument("--repeats", type=int, help="repeats of the status and context timings (median)")


if __name__ == "__main__":
    sys.exit(bl.main(run, __doc__, _options))
