"""The scrubber: held-out values in the formats a program or a model prints them, the key in the forms
a model or a program would disguise it in. None of this needs a sandbox."""

from __future__ import annotations

import base64
import math

import pytest

from autosci_hpc.scrub import HELDOUT_MARK, SECRET_MARK, Scrubber, clean_draft
from autosci_hpc.agents.policy import ProposalDraft
from autosci_hpc.task import Edit

from hostile import KEY, heldout_forms, heldout_in, key_in

VALUE = 0.7316402
SCRUB = Scrubber([VALUE, 23.718], [KEY])


@pytest.mark.parametrize("text", [f"test {VALUE:.2f}", f"{VALUE:.3f}", f"r2={VALUE:.4f};", f"{VALUE:.6f}",
                                  f"{VALUE:.3e}", f"{VALUE:.2E}", f"{VALUE * 100:.1f}%",
                                  f"{VALUE * 100:.0f} %",
                                  f"-{VALUE:.3f}", "0,7316", "7.316 x 10^-1", "rmse 23.72", "2.372e+01",
                                  f"[{VALUE:.3f}, 1.5]", "0.732", "73.16%"])
def test_held_out_values_are_removed_in_any_format(text: str) -> None:
    out = SCRUB.scrub(text)
    assert HELDOUT_MARK in out and not heldout_in(out, [VALUE, 23.718])


@pytest.mark.parametrize("text", ["val 0.7412", "x=0.0000 seed=3", "lr 0.74 and another value 0.7399",
                                  "trial 73 of 100", "python 3.11.7", "score=0.556888", "23.9"])
def test_other_numbers_are_kept(text: str) -> None:
    assert SCRUB.scrub(text) == text


@pytest.mark.parametrize("form", [KEY, KEY[::-1], " ".join(KEY), KEY.upper(), "-".join(KEY),
                                  KEY[:17] + "\n\n   " + KEY[17:], base64.b64encode(KEY.encode()).decode(),
                                  "xy" + base64.b64encode(b"ab" + KEY.encode()).decode(), KEY.encode().hex(),
                                  "the middle: " + KEY[10:30]])
def test_the_key_is_removed_in_any_recognisable_form(form: str) -> None:
    out = SCRUB.scrub(f"note: {form} end")
    assert SECRET_MARK in out and not key_in(out)
    assert KEY[10:30] not in out


def test_held_out_values_in_every_printed_form_are_found_by_the_independent_grep() -> None:
    for form in heldout_forms(VALUE):
        assert heldout_in(SCRUB.scrub(f"x {form} y"), [VALUE]) == [], form


def test_model_written_drafts_are_scrubbed_code_keeps_its_numbers() -> None:
    draft = ProposalDraft(title=f"reach {VALUE:.3f} " + KEY[::-1], focus="x_axis",
                          overrides={"x": 0.5, "tag": KEY},
                          rationale=" ".join(KEY), edits=[Edit(path="train.py", search="a = 1",
                                                               replace=f"a = {VALUE:.3f}  # {KEY}")])
    scrubber = Scrubber([VALUE], [KEY])
    clean = clean_draft(draft, scrubber)
    assert not key_in(clean.model_dump_json()) and HELDOUT_MARK in clean.title
    assert clean.overrides["x"] == 0.5 and f"{VALUE:.3f}" in clean.edits[0].replace  # code is code
    assert scrubber.hits["key"] >= 3 and scrubber.hits["heldout"] == 1


def test_a_scrubber_that_fails_withholds_the_text() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert "withheld" in SCRUB.scrub(Hostile())


def test_the_window_search_finds_exactly_what_a_pass_over_every_value_finds() -> None:
    """The held-out numbers are searched by binary search in a window around each printed number: on
    random values and their printed forms (rounded, truncated, near misses, signs, tiny and huge places),
    it answers as a comparison with every value does."""
    import random

    from autosci_hpc.scrub import _any_match, _magnitudes, _matches

    rng = random.Random(11)
    values = [rng.uniform(-3, 3) * 10 ** rng.randint(-4, 3) for _ in range(400)] + [0.5, 0.25, -0.125, 1e-9]
    magnitudes = _magnitudes(values)
    probes = []
    for value in rng.sample(values, 150):
        places = rng.randint(-2, 17)
        probes.append((round(value, places) if places <= 15 else value, places))
        probes.append((math.trunc(value * 10 ** min(places, 15)) / 10 ** min(places, 15), places))
        probes.append((value + rng.choice([-1, 1]) * 10.0 ** (-places) * rng.uniform(0.4, 1.6), places))
    probes += [(rng.uniform(-5, 5), rng.randint(0, 6)) for _ in range(300)]
    for printed, places in probes:
        for truncated in (True, False):
            expected = any(_matches(printed, places, v, truncated) for v in values)
            assert _any_match(magnitudes, printed, places, truncated) == expected, (printed, places, truncated)


def test_a_campaigns_scrubber_reads_only_the_trials_it_has_not_seen_finished(tmp_path) -> None:
    """A scrubber is made for every stored text. Each reads the trials above the highest id it read and
    those that were not finished then; a trial's numbers that arrive after it was first seen running are
    caught as soon as they are stored, and a finished trial is never read twice."""
    from sqlmodel import select

    from autosci_hpc import scrub
    from autosci_hpc.state import Store
    from autosci_hpc.state.models import Campaign, Trial

    store = Store(tmp_path / "campaign")

    def add(status: str, test_metric=None, metric=None) -> None:  # noqa: ANN001
        with store.write() as session:
            session.add(Trial(role="candidate", group="g", snapshot_id="s", config_signature="s|", seed=0,
                              status=status, metric=metric, test_metric=test_metric))

    def scrubbed(text: str, **kwargs) -> str:  # noqa: ANN003
        with store.read() as session:
            return scrub.for_session(session, **kwargs).scrub(text)

    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="t", mode="single"))
    add("succeeded", 0.123456, 0.5)
    add("submitted")
    assert scrubbed("test 0.1235, val 0.5") == f"test {HELDOUT_MARK}, val 0.5"
    numbers = next(n for where, n in scrub._TRIAL_NUMBERS.items() if str(tmp_path) in where)
    assert (numbers.watermark, numbers.pending, numbers.rows_read) == (2, {2}, 2)
    with store.write() as session:  # the running trial is ingested
        trial = session.exec(select(Trial).where(Trial.id == 2)).one()
        trial.status, trial.test_metric, trial.metric = "succeeded", 0.987654, 0.25
        session.add(trial)
    add("succeeded", 0.555555, 0.75)
    assert scrubbed("now 0.9877 and 0.5556") == f"now {HELDOUT_MARK} and {HELDOUT_MARK}"
    assert scrubbed("and 0.3142", extra=[0.31415]) == f"and {HELDOUT_MARK}"
    assert (numbers.watermark, numbers.pending, numbers.rows_read) == (3, set(), 4)  # trials 2 and 3 only
