"""The lifecycle tables, walked edge by edge through the state layer's own verbs.

Every case is generated from the tables in `state.lifecycle`: for each verb and each state a row can
be in, the verb is accepted exactly when the table allows the move, and refused otherwise with an
`IllegalTransition` that names the record, its id and both states (and the row is left unchanged).
The same tables are what `docs/architecture.md` shows; a test keeps the two the same.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from sqlmodel import Session

from autosci_hpc.state import Store, agents, campaigns, proposals, teams, trials
from autosci_hpc.state import lifecycle as lc
from autosci_hpc.state.models import Agent, Campaign, Proposal, Team, Trial

ROOT = Path(__file__).resolve().parents[2]

# ---- the rows each verb is tried on ---------------------------------------------------------


def _proposal(session: Session, status: str, team: bool = True) -> Proposal:
    agent = Agent(name=f"a-{status}-{team}", role="experimenter")
    session.add(agent)
    team_row = Team(name="t", hypothesis="h", focus="f")
    session.add(team_row)
    session.flush()
    row = Proposal(author_id=agent.id or 0, team_id=team_row.id if team else None, title="p",
                   change_signature="c", config_signature=f"s-{status}", status=status,
                   claimed_by=agent.id if status in ("claimed", "running", "replicating") else None)
    session.add(row)
    session.flush()
    return row


def _trial(session: Session, status: str) -> Trial:
    row = Trial(role="candidate", group="p1", snapshot_id="s", config_signature="c", seed=0, status=status)
    session.add(row)
    session.flush()
    return row


def _campaign(session: Session, status: str) -> Campaign:
    row = Campaign(name="c", folder="f", task_name="t", mode="decentralized", status=status)
    session.add(row)
    session.flush()
    return row


def _team(session: Session, status: str) -> Team:
    row = Team(name="t", hypothesis="h", focus="f", status=status)
    session.add(row)
    session.flush()
    return row


def _agent(session: Session, status: str) -> Agent:
    row = Agent(name=f"agent-{status}", role="experimenter", status=status)
    session.add(row)
    session.flush()
    return row


Verb = Callable[[Session, Any], None]

#: lifecycle -> (row maker, {verb name: (verb, the state it moves to, idempotent)}).
#: An idempotent verb on a row already in its target state changes nothing and is no error.
VERBS: dict[str, tuple[Callable[[Session, str], Any], dict[str, tuple[Verb, str, bool]]]] = {
    "proposal": (_proposal, {
        "reject": (lambda s, r: proposals.reject(s, r, "no"), "rejected", False),
        "accept": (proposals.accept, "queued", False),  # a team's proposal outside a re-opened discussion
        "queue": (proposals.queue, "queued", True),
        "claim": (lambda s, r: proposals.claim(s, r, s.get(Agent, r.author_id)), "claimed", False),
        "release": (lambda s, r: proposals.release(r), "queued", False),
        "start": (proposals.start, "running", False),
        "rebase": (lambda s, r: proposals.rebase(s, r, 1), "running", False),
        "replicate": (proposals.replicate, "replicating", False),
        "conclude": (lambda s, r: proposals.conclude(s, r, "not_promoted"), "done", False),
    }),
    "trial": (_trial, {
        "submitting": (lambda s, r: trials.submitting(s, r, folder="f", executor="local"), "submitting",
                       False),
        "submitted": (lambda s, r: trials.submitted(s, r, job_id="1", array_index=None), "submitted", False),
        "unsubmit": (trials.unsubmit, "created", False),
        "finish-succeeded": (lambda s, r: trials.finish(s, r, "succeeded"), "succeeded", False),
        "finish-failed": (lambda s, r: trials.finish(s, r, "failed"), "failed", False),
    }),
    "campaign": (_campaign, {
        "begin_baseline": (campaigns.begin_baseline, "baseline", False),
        "enter-discussion": (lambda s, r: campaigns.enter(s, r, "discussion"), "discussion", False),
        "enter-execution": (lambda s, r: campaigns.enter(s, r, "execution"), "execution", False),
        "fail": (campaigns.fail, "failed", False),
        "finish": (campaigns.finish, "finished", False),
    }),
    "team": (_team, {
        "reopen": (teams.reopen, "discussing", False),
        "reorganize": (lambda s, r: teams.reorganize(s, r, "g", "h2"), "active", False),
    }),
    "agent": (_agent, {
        "busy": (agents.busy, "busy", True),
        "idle": (agents.idle, "idle", True),
    }),
}


def _cases() -> list[Any]:
    cases = []
    for table in lc.LIFECYCLES:
        _, verbs = VERBS[table.record]
        for state in table.states:
            for name, (_, target, idempotent) in verbs.items():
                legal = target in table.moves[state] or (idempotent and state == target)
                verdict = "ok" if legal else "refused"
                cases.append(pytest.param(table.record, state, name, legal,
                                          id=f"{table.record}:{state}-{name}->{target}:{verdict}"))
    return cases


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("lifecycle") / "campaign")


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("record,state,verb,legal", _cases())
def test_every_verb_follows_its_lifecycle_table(store: Store, record: str, state: str, verb: str,
                                                legal: bool) -> None:
    make, verbs = VERBS[record]
    call, target, _ = verbs[verb]
    try:
        with store.write() as session:  # rolled back at the end: each case starts from an empty database
            row = make(session, state)
            if legal:
                call(session, row)
                assert row.status == target
            else:
                with pytest.raises(lc.IllegalTransition) as caught:
                    call(session, row)
                assert row.status == state, "a refused move must leave the row as it was"
                error = caught.value
                assert (error.record, error.record_id, error.current, error.target) == (
                    record, row.id, state, target)
                text = str(error)
                assert f"{record} #{row.id}" in text and f"'{state}'" in text and f"'{target}'" in text
            raise _Rollback
    except _Rollback:
        pass


def test_every_table_edge_is_exercised_by_some_verb() -> None:
    """No edge of a table is unreachable through the verbs (so the walk above covers every one)."""
    for table in lc.LIFECYCLES:
        targets = {target for _, target, _ in VERBS[table.record][1].values()}
        for state, nexts in table.moves.items():
            # proposal -> approved: the team-less cases of accept and release, tested below
            missing = [n for n in nexts if n not in targets
                       and not (table.record == "proposal" and n == "approved")]
            assert not missing, f"{table.record}: {state} -> {missing} has no verb in this test"


def test_the_approved_edges_go_through_accept_and_release_without_a_team(store: Store) -> None:
    """`accept` and `release` of a proposal with no team (or posted in a re-opened discussion) go to
    `approved`, which only the table's posted->approved and claimed->approved edges allow."""
    try:
        with store.write() as session:
            posted = _proposal(session, "posted", team=False)
            assert proposals.accept(session, posted) == "approved" and posted.status == "approved"
            reopened = _proposal(session, "posted")
            reopened.reopened = 2
            assert proposals.accept(session, reopened) == "approved"
            claimed = _proposal(session, "claimed", team=False)
            proposals.release(claimed)
            assert claimed.status == "approved" and claimed.claimed_by is None
            done = _proposal(session, "done", team=False)
            with pytest.raises(lc.IllegalTransition):
                proposals.accept(session, done)
            raise _Rollback
    except _Rollback:
        pass


def test_new_rows_start_only_where_their_table_says(store: Store) -> None:
    for table in lc.LIFECYCLES:
        for state in table.states:
            if state in table.initial:
                assert table.check(None, None, state) == state
            else:
                with pytest.raises(lc.IllegalTransition, match=f"{table.record} #\\(new\\)"):
                    table.check(None, None, state)


def test_every_state_the_enums_name_is_in_its_table_and_back() -> None:
    for table, enum in ((lc.PROPOSAL, lc.ProposalStatus), (lc.TRIAL, lc.TrialStatus),
                        (lc.CAMPAIGN, lc.CampaignStatus), (lc.TEAM, lc.TeamStatus),
                        (lc.AGENT, lc.AgentStatus)):
        assert set(table.states) == {s.value for s in enum} == set(table.moves)
        assert all(n in table.states for nexts in table.moves.values() for n in nexts)
    # the stored text is the enum's text: old databases read the same
    assert lc.ProposalStatus.REPLICATING == "replicating" and f"{lc.CampaignStatus.BASELINE}" == "baseline"


def test_the_documentation_carries_the_tables_as_written_in_code() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert lc.markdown() in doc, (
        "docs/architecture.md is out of date with state/lifecycle.py: paste the output of "
        "`python -c 'from autosci_hpc.state import lifecycle; print(lifecycle.markdown())'`")


# ---- nobody outside the state layer writes a status or builds a record ------------------------

RECORDS = {"Trial", "Champion", "Proposal", "ForumPost", "Team", "Campaign"}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        flat: list[ast.expr] = []
        for target in targets:
            flat.extend(target.elts if isinstance(target, ast.Tuple) else [target])
        for target in flat:
            if (isinstance(target, ast.Attribute) and target.attr in ("status", "outcome")
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
                found.append(f"{path}:{node.lineno}: assigns .{target.attr}")
        if isinstance(node, ast.Call):
            name: Optional[str] = (node.func.id if isinstance(node.func, ast.Name)
                                   else node.func.attr if isinstance(node.func, ast.Attribute) else None)
            if name in RECORDS:
                found.append(f"{path}:{node.lineno}: builds a {name} row")
    return found


def test_only_the_state_layer_moves_a_status_or_builds_a_record() -> None:
    package = ROOT / "autosci_hpc"
    outside = [p for p in sorted(package.rglob("*.py")) if p.relative_to(package).parts[0] != "state"]
    offences = [o for path in outside for o in _offences(path)]
    assert offences == []


def test_the_ownership_check_would_see_an_offence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(p, t):\n    p.status = 'done'\n    a.b, t.status = 1, 'x'\n"
                   "    return Trial(role='x')\n")
    assert len(_offences(bad)) == 3
