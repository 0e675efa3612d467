"""Readers compare a record's state against the enum member, never against its text typed again.

A status typed as a bare string (`Trial.status == "submited"`) silently matches nothing; the enum
member (`TrialStatus.SUBMITTED`) fails at import. The enums are `str`-valued, so a query, a pandas
filter or a plain `==` written with the member behaves exactly as the text did. This check walks the
package outside the state layer and flags every comparison, `in_`/`isin` filter or membership test
that puts a `.status`/`.outcome`/`.role`/`.kind` attribute (or a `"status"`/`"outcome"`/`"role"`/`"kind"`
column) against a string literal that is one of the lifecycle values, directly or through a name bound
to a tuple/list/set of such literals in the same module.
"""

from __future__ import annotations

import ast
import enum
from pathlib import Path
from typing import Optional

from autosci_hpc.state import lifecycle as lc

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "autosci_hpc"

#: The fields whose values the lifecycle enums name.
FIELDS = {"status", "outcome", "role", "kind"}

#: Methods that filter a column by a set of values (SQLAlchemy, pandas).
FILTERS = {"in_", "not_in", "notin_", "isin"}


def lifecycle_values() -> set[str]:
    """Every value any enum in `state.lifecycle` names (statuses, outcomes, roles, post kinds)."""
    enums = [obj for obj in vars(lc).values()
             if isinstance(obj, type) and issubclass(obj, enum.Enum) and obj.__module__ == lc.__name__]
    return {str(member.value) for e in enums for member in e}


def _field_like(node: ast.expr) -> bool:
    """`x.status`, `frame["status"]`, or `col(X.status)`."""
    if isinstance(node, ast.Attribute):
        return node.attr in FIELDS
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value in FIELDS
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col":
        return len(node.args) == 1 and _field_like(node.args[0])
    return False


def _bound_literals(tree: ast.AST) -> dict[str, list[str]]:
    """Names assigned (anywhere in the module) a tuple/list/set of string literals, with those strings."""
    bound: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        value: Optional[ast.expr] = None
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            value, targets = node.value, list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            value, targets = node.value, [node.target]
        if isinstance(value, (ast.Tuple, ast.List, ast.Set)):
            strings = [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            for target in targets:
                if isinstance(target, ast.Name) and strings:
                    bound.setdefault(target.id, []).extend(strings)
    return bound


def _literals(node: ast.expr, bound: dict[str, list[str]]) -> list[str]:
    """The string literals `node` is, holds, or (a name) was bound to."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _literals(e, bound)]
    if isinstance(node, ast.Name):
        return bound.get(node.id, [])
    return []


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def offences(path: Path, values: set[str]) -> list[str]:
    """Each place in `path` that matches a state field against a lifecycle value written as text."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bound = _bound_literals(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            pairs = [(a, b) for a in operands for b in operands if a is not b]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in FILTERS):
            pairs = [(node.func.value, arg) for arg in node.args]
        for field, other in pairs:
            if not _field_like(field):
                continue
            typed = sorted(set(_literals(other, bound)) & values)
            if typed:
                found.append((node.lineno, f"{_shown(path)}:{node.lineno}: {ast.unparse(field)} against "
                                           f"{', '.join(repr(s) for s in typed)}"))
    return [text for _, text in sorted(found)]


def test_no_reader_outside_the_state_layer_types_a_lifecycle_value() -> None:
    values = lifecycle_values()
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "state"]
    found = [o for path in outside for o in offences(path, values)]
    assert found == [], "compare with the enum member from state.lifecycle:\n" + "\n".join(found)


def test_the_values_come_from_every_lifecycle_enum() -> None:
    values = lifecycle_values()
    for member in (lc.ProposalStatus.QUEUED, lc.ProposalOutcome.NOT_PROMOTED, lc.TrialStatus.SUBMITTED,
                   lc.TrialRole.CHAMPION_RERUN, lc.CampaignStatus.FINISHED, lc.TeamStatus.DISCUSSING,
                   lc.AgentStatus.BUSY, lc.PostKind.DEAD_END):
        assert member.value in values


def test_the_check_sees_each_way_of_typing_a_status(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "FINISHED = ('succeeded', 'failed')\n"
        "def f(t, p, frame, post, row):\n"
        "    a = t.status == 'submitted'\n"                       # attribute ==
        "    b = 'rejected' != p.status\n"                       # literal on the left
        "    c = t.role in ('baseline', 'champion_rerun')\n"     # membership in a tuple literal
        "    d = frame[frame['status'] == 'running']\n"         # pandas column
        "    e = frame['role'].isin(['candidate'])\n"           # pandas filter
        "    g = select(T).where(col(T.kind).in_(['roster']))\n"  # SQL filter through col()
        "    h = frame['status'].isin(FINISHED)\n"              # through a module constant
        "    i = p.outcome == 'not_promoted'\n"
        # none of these is an offence: other fields, values no lifecycle names, the enum itself
        "    ok = (row['role'] == 'user', t.kind == 'campaign.sandbox', t.rule == 'baseline',\n"
        "          t.status == TrialStatus.FAILED, t.name == 'failed')\n", encoding="utf-8")
    found = offences(bad, lifecycle_values())
    assert [line.split(":")[1] for line in found] == ["3", "4", "5", "6", "7", "8", "9", "10"], found


def test_the_log_command_offers_exactly_the_trial_statuses() -> None:
    """`autosci log --status` keeps its choices as text (the CLI loads no database layer to build its
    parser); they must still be the trial lifecycle's states, all of them and nothing else."""
    import argparse

    from autosci_hpc.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    status = next(a for a in commands.choices["log"]._actions if a.dest == "status")
    assert list(status.choices or []) == [s.value for s in lc.TrialStatus]
