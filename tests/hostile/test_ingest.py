"""A program that prints held-out values (its own, and the champion's) and the key: what it printed is
scrubbed before it is stored, the scrubbing is on record, and nothing of it reaches an agent's view."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from autosci_hpc.agents.roles import post
from autosci_hpc.agents.views import build_view
from autosci_hpc.execution.monitor import Observation, ingest
from autosci_hpc.execution.results import read_result
from autosci_hpc.execution.trial import TrialFailed, run_trial
from autosci_hpc.llm.context import render_state
from autosci_hpc.agents.policy import AgentInfo
from autosci_hpc.scrub import register_secret
from autosci_hpc.state import Store
from autosci_hpc.state.models import Campaign, Event, ForumPost, Trial
from autosci_hpc.task import load_task

from hostile import KEY, heldout_in, hostile_task, key_in, sealed_request

CHAMPION_HELDOUT = 0.8123457
X, Y = 0.1234, 0.0321
OWN_HELDOUT = 1.0 - (X - 0.6) ** 2 - (Y + 0.3) ** 2  # the toy's noiseless (held-out) score


def test_printed_held_out_values_and_keys_are_scrubbed_at_ingestion(tmp_path: Path, mode: str) -> None:
    register_secret(KEY)  # as resolving the campaign's key does in the coordinator's process
    values = [OWN_HELDOUT, CHAMPION_HELDOUT]
    extra = ("for _v in %r:\n    print(f'held-out {_v:.2f} {_v:.4f} {_v:.3e} {100 * _v:.1f}%%')\n"
             "print('key', %r, %r)\n") % (values, KEY[::-1], " ".join(KEY))
    task = load_task(hostile_task(tmp_path, {}, extra))
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(store.folder), task_name="toy", mode="decentralized"))
        session.add(Trial(role="baseline", group="baseline", snapshot_id="s", config_signature="s|", seed=0,
                          status="succeeded", metric=0.8, test_metric=CHAMPION_HELDOUT))
        trial = Trial(role="candidate", group="g", snapshot_id="s", config_signature="s|x", seed=0,
                      status="submitted", overrides={"x": X, "y": Y})
        session.add(trial)
        session.flush()
        trial_id = trial.id
    assert trial_id is not None
    folder = store.folder / "trials" / f"{trial_id:06d}"
    request = sealed_request(task, store.folder, folder, mode, overrides={"x": X, "y": Y})
    try:
        run_trial(request)
    except TrialFailed:
        pass
    result = read_result(folder, trial_id)
    # It did print them.
    assert result is not None and heldout_in(result.log_tail, values) and key_in(result.log_tail)
    with store.write() as session:
        stored = ingest(session, Observation(trial_id, result=result))
        assert stored is not None
        post(session, "failure", f"trial {trial_id} failed", stored.log_tail, trial_ids=[trial_id])
    with store.read() as session:
        row = session.get(Trial, trial_id)
        assert row is not None
        assert not heldout_in(row.log_tail, values) and not key_in(row.log_tail)
        events = session.exec(select(Event).where(Event.kind == "leak.scrubbed")).all()
        posts = session.exec(select(ForumPost)).all()
        view = build_view(session, task)
    assert any(e.entity == "trial" and e.data["heldout"] >= 6 and e.data["key"] >= 1 for e in events), [
        (e.entity, e.data) for e in events]
    assert posts and not any(heldout_in(p.body, values) or key_in(p.body) for p in posts)
    prompt = render_state(view, AgentInfo(id=1, name="a", role="analyst"), 8000)
    assert f"trial {trial_id}" in prompt and not heldout_in(prompt, values) and not key_in(prompt)
