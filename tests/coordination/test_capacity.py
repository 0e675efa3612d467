"""How many trials may be outstanding is the executor's figure alone: the coordinator and every agent
count slots against the capacity of the executor the campaign runs on, never a figure recomputed
from the config."""

from __future__ import annotations

from pathlib import Path

from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.state import Store, budget
from autosci_hpc.state.models import Campaign, Trial
from helpers import campaign_config


def test_the_agents_count_against_the_executors_capacity_not_the_configs(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", "executor.local.max_concurrent=4")
    executor = LocalTrialExecutor(tmp_path / "jobs", max_concurrent=1)
    coordinator = Coordinator(config, config.campaign_folder(), executor=executor)
    assert coordinator.ctx.capacity == executor.capacity == 1
    assert all(agent.ctx.capacity == 1 for agent in coordinator.agents)  # type: ignore[attr-defined]


def test_free_slots_and_the_room_to_submit_are_one_count_seen_from_two_sides(tmp_path: Path) -> None:
    """An agent counts a created trial as taking a slot (the next batch sends it); the coordinator
    sends created trials into the slots no trial at the executor holds."""
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="toy", mode="decentralized"))
        for i, status in enumerate(["created", "created", "submitting", "submitted", "succeeded"]):
            session.add(Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                              status=status))
    with store.read() as session:
        assert budget.free_slots(session, 5) == 1  # 5 - (2 created + 1 submitting + 1 submitted)
        assert budget.submit_room(session, 5) == 3  # 5 - (1 submitting + 1 submitted)


def test_the_outcomes_and_the_agents_read_one_trial_budget(tmp_path: Path) -> None:
    """The room an outcome has to add seeds and the agents' gate on a new candidate are one count: a
    trial being submitted (recorded, the scheduler's answer not in yet) is a trial to come for both."""
    from autosci_hpc.coordination.outcomes import Outcomes

    config = campaign_config(tmp_path, "toy", "budget.trials=10", "promotion.seeds=3")
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="toy", mode="decentralized",
                             trials_submitted=4))
        for i, status in enumerate(["created", "submitting"]):
            session.add(Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                              status=status))
    outcomes = Outcomes.__new__(Outcomes)  # only its budget view is asked for here
    outcomes.config = config
    with store.read() as session:
        assert budget.trials_room(session, config) == 4  # 10 - (4 submitted + 1 created + 1 submitting)
        assert outcomes._room(session) == budget.trials_room(session, config)
        assert budget.may_start_candidate(session, config)  # 3 seeds fit in 4


def test_the_failure_streak_counts_the_newest_finished_trials_and_ignores_cancelled_ones(tmp_path: Path) -> None:
    """Three failures in a row stop new candidates; one success among the newest three, or a limit
    turned off, does not; a cancelled trial is neither a failure nor a break; running trials are not
    finished and do not count."""
    from autosci_hpc.config import load_config
    from autosci_hpc.state import Store, budget
    from autosci_hpc.state.models import Campaign, Trial

    store = Store(tmp_path / "campaign")

    def add(status: str, failure_class: str = "") -> None:
        with store.write() as session:
            session.add(Trial(role="candidate", group="g", snapshot_id="s", config_signature="s|", seed=0,
                              status=status, failure_class=failure_class))

    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="t", mode="single", status="execution"))
    config = load_config(None, ["budget.failures_in_a_row=3", "budget.trials=100", "promotion.seeds=1"])
    for status, failure in [("succeeded", ""), ("failed", "program_error"), ("failed", "timeout"),
                            ("failed", "cancelled"), ("submitted", "")]:
        add(status, failure)
    with store.read() as session:
        assert budget.failing_streak(session, config) is None and budget.may_start_candidate(session, config)
    add("failed", "no_result")
    with store.read() as session:
        last = budget.failing_streak(session, config)
        assert last is not None and last.failure_class == "no_result"
        assert not budget.may_start_candidate(session, config)
        assert budget.failing_streak(session, config.model_copy(
            update={"budget": config.budget.model_copy(update={"failures_in_a_row": None})})) is None
    add("succeeded")
    with store.read() as session:
        assert budget.failing_streak(session, config) is None
