"""LLM agents over HTTP: the product's real clients talking to the stand-in model server on
127.0.0.1, agents in processes of their own, and heartbeats that keep a slow conversation alive."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autosci_hpc.config import LLMSection  # noqa: E402
from autosci_hpc.coordination.coordinator import Coordinator  # noqa: E402
from autosci_hpc.llm import BeatingClient, make_client  # noqa: E402
from autosci_hpc.llm.chat import ChatRequest, Message, Text  # noqa: E402
from helpers import campaign_config  # noqa: E402
from modelserver import Brain, ModelServer  # noqa: E402


def openai_settings(server: ModelServer) -> list[str]:
    return ["llm.backend=openai", f"llm.base_url={server.openai_url()}", "llm.model=stand-in",
            "llm.prices.stand-in.input=0", "llm.prices.stand-in.output=0"]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_the_stand_in_answers_both_apis_through_the_real_clients(backend: str) -> None:
    with ModelServer(Brain()) as server:
        llm = LLMSection(backend=backend, model="stand-in", prices={"stand-in": {"input": 0, "output": 0}},
                         base_url=server.openai_url() if backend == "openai" else server.anthropic_url())
        client = make_client(llm, "sk-test-not-a-key")
        from autosci_hpc.llm.chat import ToolSpec

        request = ChatRequest(system=[], messages=[Message("user", [Text("## Findings of the evidence checks\n"
                                                                         "(no findings)")])],
                              tools=[ToolSpec("critique", "the verdict", {"type": "object", "properties": {}})],
                              max_tokens=256, require_tool=True)
        beats: list[int] = []
        response = BeatingClient(client, lambda: beats.append(1)).complete(request)
    assert [c.name for c in response.tool_calls] == ["critique"]
    assert response.tool_calls[0].input["verdict"] == "approve"
    assert len(beats) == 2  # one before the request, one after the reply
    assert server.count == 1


@pytest.mark.slow
def test_a_slow_model_does_not_get_its_agents_killed_as_hung(tmp_path: Path) -> None:
    """Each reply takes 1 s and an implementation is 5 replies; the hung limit is 3 s. The agents beat
    on every request, so no agent is restarted, and the campaign ends with a promoted champion."""
    timeout_s = 3.0
    with ModelServer(Brain(implement_reads=4), delay_s=1.0) as server:
        config = campaign_config(tmp_path, "toy", *openai_settings(server), "budget.trials=9", "budget.wall_clock_min=3",
                                 "coordination.agent_processes=true", f"coordination.agent_timeout_s={timeout_s}",
                                 "coordination.critics_per_proposal=1", "coordination.poll_interval_s=0.2")
        folder = config.campaign_folder().absolute()
        summary = Coordinator(config, folder).run()
    assert summary.status == "finished", summary
    con = sqlite3.connect(folder / "state.db")
    restarts = [r[0] for r in con.execute("select json_extract(data, '$.why') from event "
                                          "where kind='agent.restarted'")]
    assert not restarts, restarts
    # The test exercised what it names: some decision talked for longer than the hung limit.
    assert server.longest_conversation_s() > timeout_s
    assert {"propose", "critique", "implement"} <= set(server.brain.purposes)
    assert con.execute("select count(*) from champion").fetchone()[0] >= 2

    # Every conversation is kept, and `autosci show --transcript` prints the ones behind a proposal.
    assert len(list((folder / "transcripts").glob("*.jsonl"))) == len(server.conversations)
    pid = con.execute("select proposal_id from champion where proposal_id is not null").fetchone()[0]
    import subprocess

    from helpers import ROOT

    shown = subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "show", "-C", str(folder), f"p{pid}",
                            "--transcript"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "[propose]" in shown.stdout and "call post_proposal(" in shown.stdout
    assert "[implement]" in shown.stdout and "call submit(" in shown.stdout and "call list_files(" in shown.stdout


def test_doctor_says_whether_the_model_endpoint_answers(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess

    from helpers import FIXTURE_TASKS, ROOT

    def doctor(base_url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "doctor", str(tmp_path), "--config",
                               str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
                               "--set", f"task.path={FIXTURE_TASKS / 'toy'}", "--set", "llm.backend=openai",
                               "--set", f"llm.base_url={base_url}", "--set", "llm.model=stand-in",
                               "--set", "llm.prices.stand-in.input=0", "--set", "llm.prices.stand-in.output=0"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "NO_PROXY": "127.0.0.1"})

    with ModelServer() as server:
        up = doctor(server.openai_url())
    assert "ok: " in up.stdout and "/v1/models: answers" in up.stdout, up.stdout + up.stderr
    assert server.count == 0  # the probe spent no tokens: no chat request
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = doctor(f"http://127.0.0.1:{port}/v1")
    assert down.returncode == 1
    assert "FAILED" in down.stdout and "cannot connect" in down.stdout and "HTTPS_PROXY" in down.stdout


def test_a_transcript_keeps_each_turn_clipped_and_without_the_key(tmp_path: Path) -> None:
    from autosci_hpc.llm.chat import ChatResponse, ToolCall, ToolResult, ToolSpec, Usage
    from autosci_hpc.llm.transcripts import CLIP, TranscriptClient, behind_proposal, render
    from autosci_hpc.scrub import Scrubber

    secret = "sk-live-THE-KEY-0123456789"

    class Echo:
        model, name = "m", "fake"

        def complete(self, request: ChatRequest) -> ChatResponse:
            call = ToolCall(id="c", name="submit", input={"notes": f"the key is {secret[::-1]}; test 0.8123"})
            return ChatResponse(text="", tool_calls=[call], usage=Usage(), model="m", stop_reason="tool_use",
                                message=Message("assistant", [call]))

    client = TranscriptClient(Echo(), tmp_path, lambda: Scrubber(heldout=[0.81234], secrets=[secret]).scrub)
    tools = [ToolSpec("submit", "", {"type": "object"})]
    opening = Message("user", [Text("implement ## Proposal p7 by analyst-1 " + "x" * (CLIP + 500))])
    client.complete(ChatRequest(system=[], messages=[opening], tools=tools))
    client.complete(ChatRequest(system=[], tools=tools, messages=[
        opening, Message("assistant", []), Message("user", [ToolResult("c", f"ok {secret}")])]))
    [path] = behind_proposal(tmp_path, 7, "")
    text = render(path)
    assert secret not in path.read_text() and secret[::-1] not in path.read_text()
    assert text.count("[redacted]") >= 3 and "0.8123" not in text  # the reply too: the key reversed, a held-out value
    assert "characters clipped" in text and "[implement]" in text
    assert behind_proposal(tmp_path, 70, "") == []  # p7 is not p70
