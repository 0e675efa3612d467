"""Dollars and budgets: committed cost, the budget stop, spend by role and team, prices, API keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from autosci_hpc.config import ConfigError, LLMSection, ModelPrice, load_config, price_of
from autosci_hpc.llm.accounting import (CallRecord, StoreRecorder, committed_cost, cost_usd, llm_budget_exhausted,
                                        spend_by_role_and_team)
from autosci_hpc.llm.chat import Usage
from autosci_hpc.llm.keys import APIKeyError, resolve_api_key
from autosci_hpc.llm.policy import LLMBudgetExceeded
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, Team
from autosci_hpc.status import spend_table

from llm_fakes import FakeServer, agent, anthropic_policy, tool_use, toy_view


def store_with_agents(folder: Path) -> Store:
    store = Store(folder)
    with store.write() as session:
        team = Team(name="team-1", hypothesis="h", focus="x_axis")
        session.add(team)
        session.flush()
        session.add(Agent(name="analyst-1", role="analyst", team_id=team.id))
        session.add(Agent(name="analyst-2", role="analyst"))
        session.add(Agent(name="experimenter-1", role="experimenter", team_id=team.id))
    return store


def record(store: Store, agent_id, cost: float, error: str = "", purpose: str = "propose") -> None:
    StoreRecorder(store).record(CallRecord(agent_id=agent_id, purpose=purpose, model="claude-sonnet-4-6",
                                           tokens_in=1000, tokens_out=100, tokens_cached=400, cost_usd=cost,
                                           latency_s=1.5, error=error))


def test_the_budget_stop_fires_on_committed_cost_not_on_spent_alone(tmp_path: Path) -> None:
    store = store_with_agents(tmp_path / "c")
    assert committed_cost(store) == 0.0 and not llm_budget_exhausted(store, 1.0)
    for cost in (0.3, 0.3, 0.3):
        record(store, 1, cost)
    assert committed_cost(store) == pytest.approx(0.9)
    assert committed_cost(store, in_flight_estimate=0.05) == pytest.approx(0.95)
    assert not llm_budget_exhausted(store, 1.0, in_flight_estimate=0.05)
    assert llm_budget_exhausted(store, 1.0, in_flight_estimate=0.1)  # spent 0.9 + in flight 0.1
    assert not llm_budget_exhausted(store, None, in_flight_estimate=100.0)  # no budget set
    record(store, 3, 0.2)
    assert llm_budget_exhausted(store, 1.0)


def test_the_policy_refuses_a_request_that_would_pass_the_budget(tmp_path: Path) -> None:
    store = store_with_agents(tmp_path / "c")
    task, view = toy_view(tmp_path / "c")
    record(store, 1, 0.999)
    server = FakeServer(lambda body: tool_use(("critique", {"verdict": "approve", "reasons": "ok"})))
    policy = anthropic_policy(server, task, tmp_path / "c", recorder=StoreRecorder(store), budget_usd=1.0)
    with pytest.raises(LLMBudgetExceeded, match=r"budget of \$1 is spent"):
        policy.critique(agent("analyst"), view, _proposal(), [])
    assert server.count == 0  # refused before any request
    assert policy.in_flight_estimate() > 0


def test_spend_by_role_and_team_and_the_status_table(tmp_path: Path) -> None:
    store = store_with_agents(tmp_path / "c")
    record(store, 1, 0.10)
    record(store, 1, 0.0, error="anthropic: HTTP 529 overloaded_error")
    record(store, 2, 0.05)
    record(store, 3, 0.40, purpose="implement")
    record(store, None, 0.01)
    rows = spend_by_role_and_team(store)
    by_key = {(r.role, r.team): r for r in rows}
    assert rows[0].role == "experimenter" and rows[0].cost_usd == pytest.approx(0.40)
    assert by_key[("analyst", "team-1")].calls == 2 and by_key[("analyst", "team-1")].errors == 1
    assert by_key[("analyst", "team-1")].tokens_cached == 800
    assert by_key[("analyst", "—")].cost_usd == pytest.approx(0.05)
    assert by_key[("—", "—")].calls == 1
    table = spend_table(store)
    assert table is not None and table.row_count == len(rows) + 1  # + the total
    assert spend_table(Store(tmp_path / "empty")) is None


def test_prices_unknown_models_and_exact_cost() -> None:
    price = ModelPrice(input=3.0, output=15.0)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=1_000_000,
                  cache_write_tokens=1_000_000)
    assert cost_usd(usage, price) == pytest.approx(3.0 + 15.0 + 0.3 + 3.75)
    prices = LLMSection().prices
    assert price_of(prices, "claude-sonnet-4-5-20250929") == prices["claude-sonnet-4-5"]
    assert price_of(prices, "gpt-nothing") is None
    with pytest.raises(ConfigError, match="no price for model 'my-model'"):
        load_config(None, ["llm.backend=openai", "llm.model=my-model"])
    config = load_config(None, ["llm.backend=openai", "llm.model=my-model", "llm.prices.my-model.input=0",
                                "llm.prices.my-model.output=0"])
    assert config.llm.prices["my-model"].input == 0 and "claude-sonnet-4-6" in config.llm.prices


def test_the_api_key_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    llm = LLMSection(backend="anthropic")
    assert resolve_api_key(llm, {"ANTHROPIC_API_KEY": "sk-env"}) == "sk-env"
    with pytest.raises(APIKeyError, match="set ANTHROPIC_API_KEY or llm.api_key_file"):
        resolve_api_key(llm, {})
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    key_file.chmod(0o644)
    with pytest.raises(APIKeyError, match=r"readable by group or others \(mode 0644\).*chmod 600"):
        resolve_api_key(LLMSection(backend="anthropic", api_key_file=str(key_file)), {})
    key_file.chmod(0o600)
    assert resolve_api_key(LLMSection(backend="anthropic", api_key_file=str(key_file)),
                           {"ANTHROPIC_API_KEY": "sk-env"}) == "sk-file"
    with pytest.raises(APIKeyError, match="cannot read"):
        resolve_api_key(LLMSection(backend="anthropic", api_key_file=str(tmp_path / "missing")), {})
    # A server on the cluster may need no key at all.
    assert resolve_api_key(LLMSection(backend="openai", model="claude-sonnet-4-6"), {}) is None


def _proposal():
    from autosci_hpc.agents.views import ProposalView

    return ProposalView(id=3, author="analyst-2", team_id=1, focus="x_axis", title="t", rationale="r",
                        overrides={"x": 0.4}, edits=[], change_signature="x=0.4", config_signature="s|x=0.4",
                        directions=["x~bin4/6"], status="posted", outcome="", base_champion_id=1)
