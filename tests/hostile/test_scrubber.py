"""The scrubber: held-out values in the formats a program or a model prints them, the key in the forms
a model or a program would disguise it in. None of this needs a sandbox."""

from __future__ import annotations

import base64

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
