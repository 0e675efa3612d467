"""What a result sets in motion under the paired rule, driven result by result through `Outcomes`.

No trial runs here: each test writes the results a trial would report and hands them to
`Outcomes.react` inside one write transaction, exactly as the coordinator's ingest does. That makes
the order of events (a champion promoted while a candidate runs, a seed that comes in last) a
deterministic part of the test, not a race.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sqlmodel import col, select

from autosci_hpc.coordination.outcomes import CHAMPION_RERUN, Outcomes
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, Campaign, Champion, Proposal, Trial
from autosci_hpc.task import Edit, build_snapshot, config_signature, load_task

from helpers import FIXTURE_TASKS, campaign_config

BASE = {0: 0.50, 1: 0.52, 2: 0.48}


class World:
    """A campaign in execution with a baseline champion (sd 0.02 over 3 seeds) and one proposal."""

    def __init__(self, tmp_path: Path, *overrides: str, task: str = "toy") -> None:
        self.config = campaign_config(tmp_path, task, "budget.trials=40", *overrides)
        self.task = load_task(FIXTURE_TASKS / task)
        self.folder = self.config.campaign_folder()
        self.store = Store(self.folder)
        self.outcomes = Outcomes(self.task, self.config)
        self.snapshot = build_snapshot(self.task, self.folder)
        with self.store.write() as session:
            session.add(Campaign(name="c", folder=str(self.folder), task_name="toy", mode="decentralized",
                                 status="execution"))
            session.add(Agent(name="experimenter-1", role="experimenter"))
            session.add(Champion(group="baseline", snapshot_id=self.snapshot, overrides={},
                                 config_signature=config_signature(self.snapshot, {}),
                                 seed_metrics={str(k): v for k, v in BASE.items()}, metric_mean=0.5,
                                 metric_std=0.02, rule="baseline"))

    def propose(self, overrides: dict, edits: Optional[list[Edit]] = None, parent: int = 1) -> tuple[int, int]:
        """A claimed proposal and its seed-0 candidate trial (submitted), built on champion `parent`."""
        with self.store.write() as session:
            base = session.get(Champion, parent)
            assert base is not None
            snapshot = build_snapshot(self.task, self.folder, base.snapshot_id, edits) if edits else base.snapshot_id
            effective = {**base.overrides, **overrides}
            proposal = Proposal(author_id=1, title=f"try {overrides}", rationale="because", overrides=overrides,
                                change_signature=str(overrides), config_signature=str(overrides),
                                status="running", claimed_by=1, base_champion_id=parent)
            session.add(proposal)
            session.flush()
            trial = Trial(proposal_id=proposal.id, experimenter_id=1, role="candidate", group=f"p{proposal.id}",
                          snapshot_id=snapshot, overrides=effective,
                          config_signature=config_signature(snapshot, effective), seed=0, status="submitted",
                          parent_champion_id=parent, notes="set it by hand")
            session.add(trial)
            session.flush()
            assert proposal.id is not None and trial.id is not None
            return proposal.id, trial.id

    def baseline_runs(self, conditions: dict) -> None:
        """The baseline's runs on the seeds of BASE, as the log holds them, run under `conditions`."""
        with self.store.write() as session:
            for seed, value in BASE.items():
                session.add(Trial(role="baseline", group="baseline", snapshot_id=self.snapshot, overrides={},
                                  config_signature=config_signature(self.snapshot, {}), seed=seed,
                                  status="succeeded", metric=value, conditions=conditions))

    def report(self, trial_id: int, metric: float, conditions: Optional[dict] = None) -> None:
        """The trial's result arrives and is acted on, in one transaction."""
        with self.store.write() as session:
            trial = session.get(Trial, trial_id)
            assert trial is not None
            trial.status, trial.metric = "succeeded", metric
            trial.conditions = conditions or {}
            session.add(trial)
            self.outcomes.react(session, trial)

    def open_trials(self) -> list[Trial]:
        with self.store.read() as session:
            return list(session.exec(select(Trial).where(Trial.status != "succeeded").order_by(col(Trial.id))).all())

    def finish(self, candidate: dict[int, float], champion: Optional[dict[int, float]] = None,
               proposal: Optional[int] = None, conditions: Optional[dict] = None) -> None:
        """Report every open trial (of `proposal`, if given): the candidate's seeds from `candidate`,
        champion reruns from `champion`, all run under `conditions`."""
        for trial in self.open_trials():
            if proposal is not None and trial.proposal_id != proposal:
                continue
            values = champion if trial.role == CHAMPION_RERUN else candidate
            assert values is not None and trial.id is not None
            self.report(trial.id, values[trial.seed], conditions)

    def proposal(self, proposal_id: int) -> Proposal:
        with self.store.read() as session:
            row = session.get(Proposal, proposal_id)
            assert row is not None
            return row

    def champions(self) -> list[Champion]:
        with self.store.read() as session:
            return list(session.exec(select(Champion).order_by(col(Champion.id))).all())


def test_an_inconclusive_candidate_gets_more_seeds_and_the_champion_is_run_on_them(tmp_path: Path) -> None:
    world = World(tmp_path)
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.53)  # +0.03 on seed 0: passes the screen
    assert sorted((t.role, t.seed) for t in world.open_trials()) == [("replicate", 1), ("replicate", 2)]
    world.finish({1: 0.53, 2: 0.49})  # +0.01, +0.01: a gain too small to tell from the baseline's noise
    assert world.proposal(pid).status == "replicating"
    # Two more seeds, and the champion (which has only seeds 0-2) runs on them in the same batch.
    assert sorted((t.role, t.seed) for t in world.open_trials()) == [
        (CHAMPION_RERUN, 3), (CHAMPION_RERUN, 4), ("replicate", 3), ("replicate", 4)]
    assert {t.group for t in world.open_trials() if t.role == CHAMPION_RERUN} == {f"p{pid}:champion"}
    world.finish({3: 0.60, 4: 0.58, 5: 0.59, 6: 0.61}, champion={3: 0.50, 4: 0.51, 5: 0.49, 6: 0.50})
    while world.open_trials():  # until the rule decides
        world.finish({k: 0.58 + 0.01 * (k % 2) for k in range(20)}, champion={k: 0.50 for k in range(20)})
    proposal = world.proposal(pid)
    assert proposal.status == "done" and proposal.outcome == "promoted"
    new = world.champions()[-1]
    assert new.rule == "paired" and len(new.seed_metrics) == new.rule_detail["seeds"] >= 5
    assert new.rule_detail["p_value"] < new.rule_detail["level"]
    assert new.rule_detail["champion"]["3"] == 0.50  # measured by the rerun, paired with seed 3


def test_stored_champion_runs_are_reused(tmp_path: Path) -> None:
    world = World(tmp_path)
    first, tid = world.propose({"x": 0.3})
    world.report(tid, 0.53)
    world.finish({1: 0.53, 2: 0.49})
    world.finish({3: 0.45, 4: 0.46}, champion={3: 0.50, 4: 0.51})  # clearly worse: stops
    assert world.proposal(first).outcome == "not_promoted"
    second, tid = world.propose({"x": 0.4})
    world.report(tid, 0.53)
    world.finish({1: 0.53, 2: 0.49})
    # Seeds 3 and 4 of the champion are in the log already: only the candidate runs.
    assert sorted((t.role, t.seed) for t in world.open_trials()) == [("replicate", 3), ("replicate", 4)]


def test_two_replications_share_the_champions_runs_on_new_seeds(tmp_path: Path) -> None:
    """Two inconclusive candidates at once both need the champion on seeds 3 and 4: it runs there once,
    and the replication that did not start those runs waits for them before it is decided."""
    world = World(tmp_path)
    first, t1 = world.propose({"x": 0.3})
    second, t2 = world.propose({"x": 0.4})
    world.report(t1, 0.53)
    world.report(t2, 0.53)
    world.finish({1: 0.53, 2: 0.49}, proposal=first)  # inconclusive: seeds 3, 4 and the champion there
    world.finish({1: 0.53, 2: 0.49}, proposal=second)  # the same: the champion's runs are under way
    reruns = [t for t in world.open_trials() if t.role == CHAMPION_RERUN]
    assert sorted(t.seed for t in reruns) == [3, 4] and {t.proposal_id for t in reruns} == {first}
    # The second candidate's seeds come in first: it must wait for the champion's.
    for trial in world.open_trials():
        if trial.proposal_id == second and trial.id is not None:
            world.report(trial.id, {3: 0.45, 4: 0.46}[trial.seed])
    assert world.proposal(second).status == "replicating"
    for trial in world.open_trials():
        if trial.proposal_id == first and trial.role == "replicate" and trial.id is not None:
            world.report(trial.id, {3: 0.44, 4: 0.45}[trial.seed])
    for trial in reruns:  # the champion's runs arrive: both replications are decided on them
        world.report(trial.id or 0, {3: 0.50, 4: 0.51}[trial.seed])
    assert world.proposal(first).outcome == "not_promoted"
    assert world.proposal(second).outcome == "not_promoted"
    with world.store.read() as session:
        reruns_made = session.exec(select(Trial).where(Trial.role == CHAMPION_RERUN)).all()
        assert len(reruns_made) == 2


def test_remeasuring_runs_the_champion_next_to_every_seed(tmp_path: Path) -> None:
    world = World(tmp_path, "promotion.remeasure_champion=true")
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.60)
    assert sorted((t.role, t.seed) for t in world.open_trials()) == [
        (CHAMPION_RERUN, 0), (CHAMPION_RERUN, 1), (CHAMPION_RERUN, 2), ("replicate", 1), ("replicate", 2)]
    # Measured now, the champion does better than the candidate: against its stored 0.50s it was a gain.
    world.finish({0: 0.60, 1: 0.61, 2: 0.59}, champion={0: 0.64, 1: 0.65, 2: 0.63})
    assert world.proposal(pid).outcome == "not_promoted"
    assert len(world.champions()) == 1


def test_a_timed_task_reruns_the_champion_next_to_every_replicated_seed(tmp_path: Path) -> None:
    """`noise: timed`: the stored runs of the champion are stale evidence. Its replication runs the
    candidate again on seed 0 and the champion on every seed, created together (one submission), and the
    decision pairs the side-by-side runs only."""
    world = World(tmp_path, task="timed")
    assert world.task.timed and not world.config.promotion.remeasure_champion
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.70)  # seed 0 screened against the stored champion (0.50): +0.20; all six
    opened = world.open_trials()  # were created in that one transaction: the submitter's next batch
    assert sorted((t.role, t.seed) for t in opened) == [
        (CHAMPION_RERUN, 0), (CHAMPION_RERUN, 1), (CHAMPION_RERUN, 2),
        ("replicate", 0), ("replicate", 1), ("replicate", 2)]
    # Side by side, the champion is as good as the candidate: the screen's gain was the conditions.
    world.finish({0: 0.70, 1: 0.71, 2: 0.69}, champion={0: 0.70, 1: 0.71, 2: 0.70})
    assert world.proposal(pid).outcome == "not_promoted"
    assert len(world.champions()) == 1
    # The same measurements on a task whose runs are reproducible would reuse the stored champion runs
    # (0.50, 0.52, 0.48) and promote: what `noise: timed` guards against.
    seeded = World(tmp_path / "seeded")
    pid, tid = seeded.propose({"x": 0.3})
    seeded.report(tid, 0.70)
    assert sorted((t.role, t.seed) for t in seeded.open_trials()) == [("replicate", 1), ("replicate", 2)]
    seeded.finish({1: 0.71, 2: 0.69})
    assert seeded.proposal(pid).outcome == "promoted"


def test_a_timed_champion_decision_uses_the_rerun_of_seed_0(tmp_path: Path) -> None:
    world = World(tmp_path, task="timed")
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.40)  # a bad screen would stop it; a good one:
    assert world.proposal(pid).outcome == "not_promoted"
    pid, tid = world.propose({"x": 0.35})
    world.report(tid, 0.90)
    world.finish({0: 0.70, 1: 0.71, 2: 0.69}, champion={0: 0.50, 1: 0.51, 2: 0.49})
    new = world.champions()[-1]
    assert world.proposal(pid).outcome == "promoted"
    assert new.seed_metrics["0"] == 0.70  # the side-by-side re-run, not the screen's 0.90
    assert new.rule_detail["champion"] == {"0": 0.50, "1": 0.51, "2": 0.49}


def test_a_comparison_across_different_run_conditions_is_flagged(tmp_path: Path) -> None:
    """The champion's stored runs had the GPU to themselves; the challenger's shared it four ways: the
    decision, the model card and the forum say the two sides ran under different conditions."""
    alone = {"host": "node1", "devices": "0", "gpu": ["NVIDIA H200"], "share": 1}
    crowded = {**alone, "share": 4}
    world = World(tmp_path)
    world.baseline_runs(alone)  # the baseline's three runs, as the log has them
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.70, crowded)
    world.finish({1: 0.71, 2: 0.69}, conditions=crowded)
    new = world.champions()[-1]
    assert world.proposal(pid).outcome == "promoted"
    assert new.rule_detail["conditions_differ"] == "trials sharing the GPU 4 vs 1"
    assert "WARNING: compared across different run conditions" in new.model_card
    assert "GPU NVIDIA H200, shared by 4 trials" in new.model_card
    # The same comparison under the same conditions carries no flag.
    same = World(tmp_path / "same")
    same.baseline_runs(alone)
    pid, tid = same.propose({"x": 0.3})
    same.report(tid, 0.70, alone)
    same.finish({1: 0.71, 2: 0.69}, conditions=alone)
    assert "conditions_differ" not in same.champions()[-1].rule_detail
    assert "WARNING" not in same.champions()[-1].model_card


def test_no_seeds_past_the_budget(tmp_path: Path) -> None:
    world = World(tmp_path, "budget.trials=3")  # nothing submitted is counted here: room for 3 trials
    pid, tid = world.propose({"x": 0.3})
    world.report(tid, 0.53)
    world.finish({1: 0.53, 2: 0.49})  # inconclusive, but 2 replicates + 2 champion reruns do not fit
    proposal = world.proposal(pid)
    assert proposal.status == "done" and proposal.outcome == "not_promoted"
    assert world.open_trials() == []


def test_a_candidate_that_finishes_after_a_new_champion_is_rebased_and_measured_again(tmp_path: Path) -> None:
    world = World(tmp_path)
    slow, slow_trial = world.propose({"y": -0.3})  # built on the baseline ...
    fast, fast_trial = world.propose({"x": 0.6})
    world.report(fast_trial, 0.9)
    world.finish({1: 0.91, 2: 0.89}, proposal=fast)  # ... while this one is promoted
    assert world.proposal(fast).outcome == "promoted" and len(world.champions()) == 2
    world.report(slow_trial, 0.95)  # better than anything, but measured against the old champion
    champions = world.champions()
    assert len(champions) == 2 and champions[-1].overrides == {"x": 0.6}  # never replaced by it
    # Its change (y) is re-applied on the new champion (x) and measured there: a new seed-0 candidate.
    proposal = world.proposal(slow)
    assert proposal.status == "running" and proposal.base_champion_id == champions[-1].id
    [again] = world.open_trials()
    assert (again.role, again.seed, again.overrides) == ("candidate", 0, {"x": 0.6, "y": -0.3})
    assert again.parent_champion_id == champions[-1].id and again.group == f"p{slow}@{champions[-1].id}"
    world.report(again.id or 0, 0.97)  # on the new champion's seed 0 (0.9): it passes the screen
    world.finish({1: 0.98, 2: 0.96})
    assert world.proposal(slow).outcome == "promoted"
    last = world.champions()[-1]
    assert last.overrides == {"x": 0.6, "y": -0.3} and last.previous_id == champions[-1].id


def test_a_candidate_whose_change_conflicts_with_the_new_champion_is_stale(tmp_path: Path) -> None:
    world = World(tmp_path)
    slow, slow_trial = world.propose({"x": 0.2})  # sets the same key the new champion sets differently
    fast, fast_trial = world.propose({"x": 0.6})
    world.report(fast_trial, 0.9)
    world.finish({1: 0.91, 2: 0.89}, proposal=fast)
    world.report(slow_trial, 0.95)
    proposal = world.proposal(slow)
    assert proposal.status == "done" and proposal.outcome == "stale"
    champions = world.champions()
    assert len(champions) == 2 and champions[-1].overrides == {"x": 0.6}
    assert world.open_trials() == []  # no replication spent on it


def test_with_rebase_off_an_overtaken_candidate_is_only_stale(tmp_path: Path) -> None:
    world = World(tmp_path, "promotion.rebase=false")
    slow, slow_trial = world.propose({"y": -0.3})
    fast, fast_trial = world.propose({"x": 0.6})
    world.report(fast_trial, 0.9)
    world.finish({1: 0.91, 2: 0.89}, proposal=fast)
    world.report(slow_trial, 0.95)
    assert world.proposal(slow).outcome == "stale" and world.open_trials() == []


def test_a_code_change_is_rebased_file_by_file(tmp_path: Path) -> None:
    """A code edit built on the baseline goes onto a newer champion that changed another file (or none)."""
    world = World(tmp_path)
    slow, slow_trial = world.propose({}, edits=[Edit(path="train.py", search="import argparse",
                                                     replace="import argparse  # rebased")])
    fast, fast_trial = world.propose({"x": 0.6})
    world.report(fast_trial, 0.9)
    world.finish({1: 0.91, 2: 0.89}, proposal=fast)
    world.report(slow_trial, 0.95)
    [again] = world.open_trials()
    assert again.overrides == {"x": 0.6}
    with world.store.read() as session:
        original = session.get(Trial, slow_trial)
        assert original is not None
    assert again.snapshot_id == original.snapshot_id  # the new champion kept the program: same files
    code = (world.folder / "snapshots" / again.snapshot_id / "train.py").read_text()
    assert "import argparse  # rebased" in code


def test_a_replication_that_completes_after_a_new_champion_is_never_promoted_over_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    slow, slow_trial = world.propose({"x": 0.2})
    world.report(slow_trial, 0.95)  # passes its screen: replicating on seeds 1, 2
    fast, fast_trial = world.propose({"x": 0.6})
    world.report(fast_trial, 0.9)
    replicates = {t.id: t for t in world.open_trials()}
    for trial_id, trial in replicates.items():  # the fast one's replicates come in first
        if trial.proposal_id == fast and trial_id is not None:
            world.report(trial_id, 0.9)
    assert world.proposal(fast).outcome == "promoted"
    world.finish({1: 0.95, 2: 0.95})
    assert world.proposal(slow).outcome == "stale"  # x set both ways: a conflict
    assert [c.overrides for c in world.champions()] == [{}, {"x": 0.6}]


def test_every_trial_records_its_diff_against_the_parent_champion(tmp_path: Path) -> None:
    world = World(tmp_path)
    edit = Edit(path="train.py", search="import time\n", replace="import time  # edited by the experimenter\n")
    pid, tid = world.propose({"x": 0.6}, edits=[edit])
    world.report(tid, 0.9)
    world.finish({1: 0.91, 2: 0.89})
    with world.store.read() as session:
        trials = session.exec(select(Trial).where(Trial.proposal_id == pid)).all()
    assert len(trials) == 3 and all(t.parent_champion_id == 1 for t in trials)
    diff = trials[0].diff or ""
    assert "--- a/train.py" in diff and "+import time  # edited by the experimenter" in diff
    # The program's own value of the key, then the override.
    assert "-x: 0.0\n+x: 0.6" in diff and "config.yaml" not in diff
    assert all(t.diff == diff for t in trials)
    champion = world.champions()[-1]
    assert champion.diff == diff
    card = champion.model_card
    assert "hypothesis: try {'x': 0.6}" in card and "rationale: because" in card
    assert "experimenter's notes: set it by hand" in card and "+import time  # edited" in card
    assert "95% CI" in card and "p=" in card and "min effect" in card


def test_show_prints_a_trials_and_a_champions_diff_and_card(tmp_path: Path) -> None:
    from autosci_hpc.status import show

    world = World(tmp_path)
    edit = Edit(path="train.py", search="import time\n", replace="import time  # edited by the experimenter\n")
    pid, tid = world.propose({"x": 0.6}, edits=[edit])
    # Still running: the diff comes from the snapshot store.
    running = show(world.store, str(tid))
    assert "--- diff against champion #1 ---" in running and "+import time  # edited" in running
    assert "experimenter's notes: set it by hand" in running
    world.report(tid, 0.9)
    world.finish({1: 0.91, 2: 0.89})
    card = show(world.store, "champion")
    assert card.startswith("Champion #2") and "+x: 0.6" in card and "95% CI" in card
    assert show(world.store, "c2") == card
    assert "+x: 0.6" in show(world.store, str(tid))
    assert show(world.store, "c1").lower().startswith("champion #1")


def test_the_screen_judges_a_first_run_against_the_mean_of_the_champions_runs(tmp_path: Path) -> None:
    """Under the paired rule a candidate's seed-0 run is screened against the mean of the champion's runs:
    a champion whose own seed-0 run was lucky (0.56 against a mean of 0.50) would otherwise hold back
    every candidate of the campaign. The earlier `mean` rule keeps the same-seed screen."""
    for rule, replicated in (("paired", True), ("mean", False)):
        world = World(tmp_path / rule, f"promotion.rule={rule}")
        with world.store.write() as session:
            champion = session.get(Champion, 1)
            assert champion is not None
            champion.seed_metrics = {"0": 0.56, "1": 0.47, "2": 0.47}
            session.add(champion)
        pid, tid = world.propose({"x": 0.3})
        world.report(tid, 0.53)  # 0.03 below the champion's seed 0, 0.03 above the mean of its runs
        opened = sorted((t.role, t.seed) for t in world.open_trials())
        assert (opened == [("replicate", 1), ("replicate", 2)]) is replicated, (rule, opened)
        assert (world.proposal(pid).status == "replicating") is replicated
