"""The re-base rule itself: a candidate's change against its parent champion, re-applied to a newer one."""

from __future__ import annotations

from autosci_hpc.coordination.rebase import merge_files, merge_overrides


def test_override_changes_go_on_top_of_the_new_champion() -> None:
    parent, new = {"lr": 1e-3}, {"lr": 1e-3, "depth": 8}
    assert merge_overrides(parent, {"lr": 3e-3}, new) == {"lr": 3e-3, "depth": 8}
    assert merge_overrides(parent, {}, new) == {"depth": 8}  # the candidate dropped lr: dropped again
    assert merge_overrides(parent, {"lr": 1e-3, "depth": 8}, new) == new  # the same change: nothing to add


def test_an_override_both_sides_changed_differently_is_a_conflict() -> None:
    why = merge_overrides({"lr": 1e-3}, {"lr": 3e-3}, {"lr": 2e-3})
    assert isinstance(why, str) and why.startswith("override lr:")


def test_files_merge_three_ways() -> None:
    parent = {"train.py": b"a", "config.yaml": b"c", "old.py": b"o"}
    candidate = {"train.py": b"A", "config.yaml": b"c"}  # edits train.py, deletes old.py
    new = {"train.py": b"a", "config.yaml": b"C", "old.py": b"o"}  # the new champion edited config.yaml
    assert merge_files(parent, candidate, new) == {"train.py": b"A", "config.yaml": b"C"}
    both = merge_files(parent, candidate, {**new, "train.py": b"B"})
    assert isinstance(both, str) and both.startswith("train.py")
    # The new champion made the same edit already: kept, and the candidate's deletion still applies.
    assert merge_files(parent, candidate, {**new, "train.py": b"A"}) == {"train.py": b"A", "config.yaml": b"C"}
