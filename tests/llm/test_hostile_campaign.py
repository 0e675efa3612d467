"""`autosci run` with a model that only ever sends hostile or broken replies (an OpenAI-compatible
server on 127.0.0.1): the campaign runs to its budget; every bad reply is a recorded policy error for
its agent, never a crash, and the database stays sound."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from autosci_hpc.cli import main as cli_main

from helpers import FIXTURE_TASKS, ROOT
from modelserver import ModelServer, Raw
from test_hostile_replies import CASES


def test_a_campaign_survives_a_model_that_only_sends_garbage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    hostile = itertools.cycle([case.hostile for case in CASES if case.outcome != "clean"])

    def reply(body: dict) -> Raw:
        return next(hostile)("openai")

    folder = tmp_path / "campaign"
    with ModelServer(script=[reply]) as server:
        code = cli_main(["run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
                         f"campaign.folder={folder}", f"task.path={FIXTURE_TASKS / 'toy'}",
                         "llm.backend=openai", f"llm.base_url={server.url}/v1",
                         "llm.model=garbage-7b", "llm.prices={garbage-7b: {input: 1.0, output: 2.0}}",
                         "llm.max_retries=1", "llm.retry_base_s=0.01", "llm.retry_max_s=0.01",
                         "budget.trials=6", "budget.wall_clock_min=0.3", "--quiet"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    assert "Traceback" not in out.err + out.out
    assert server.count > 5
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    calls, errors, spent, negative = con.execute(
        "select count(*), sum(length(error) > 0), sum(cost_usd), sum(tokens_in < 0 or tokens_out < 0 "
        "or cost_usd < 0) from llm_call").fetchone()
    assert calls == server.count and errors > 0 and spent >= 0 and negative == 0
    failures = con.execute("select count(*) from event where kind = 'agent.policy_error'").fetchone()[0]
    assert failures > 0
    # The baseline still ran: the garbage cost the agents their decisions, not the campaign its trials.
    assert con.execute("select count(*) from trial where role = 'baseline' and status = 'succeeded'"
                       ).fetchone()[0]
