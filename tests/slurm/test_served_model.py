"""An open model served on the cluster (`llm.serve`): the coordinator submits the server as a Slurm
job of its own (here the stand-in, as if it were vLLM), waits until it answers, points the agents at
it, submits it again when it dies, and cancels it when the campaign ends."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_launch import query, wait_for  # noqa: E402

pytestmark = pytest.mark.slurm


def listed(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return bool(out.stdout.strip())


@pytest.mark.slow
def test_the_coordinator_serves_the_model_restarts_it_and_stops_it(tmp_path: Path, slurm_cluster: object) -> None:
    folder = tmp_path / "campaign"
    partition = getattr(slurm_cluster, "partition")
    argv = [sys.executable, "-m", "autosci_hpc.cli", "coordinate", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
            f"campaign.folder={folder}", f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=12",
            "coordination.poll_interval_s=0.2", "llm.backend=openai", "llm.model=stand-in",
            "llm.prices.stand-in.input=0", "llm.prices.stand-in.output=0", "llm.smoke_run=false",
            "llm.retry_base_s=0.5", "llm.retry_max_s=2", "llm.max_retries=8",
            f"llm.serve.command='{{python}} {ROOT / 'tests' / 'modelserver.py'} --port {{port}}'",
            f"llm.serve.partition={partition}", "llm.serve.cpus_per_task=1", "llm.serve.mem_gb=0.5",
            "llm.serve.time_min=10", "llm.serve.check_interval_s=1", "llm.serve.startup_timeout_s=120"]
    env = {**os.environ, "NO_PROXY": "*"}
    env.pop("SLURM_JOB_ID", None)
    log = open(tmp_path / "coordinator.log", "w")
    proc = subprocess.Popen(argv + ["--inline-agents"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    def calls() -> int:
        assert proc.poll() is None, (tmp_path / "coordinator.log").read_text()[-3000:]
        return (query(folder, "select count(*) from llm_call where error = ''") or [(0,)])[0][0]

    try:
        wait_for("the agents to talk to the served model", lambda: calls() >= 3, 180)
        first = (folder / "served" / "job").read_text().strip()
        subprocess.run(["scancel", first], check=True)  # the server dies mid-campaign
        wait_for("the restart", lambda: query(folder, "select 1 from event where kind='model_server.restarted'"))
        assert proc.wait(timeout=420) == 0, (tmp_path / "coordinator.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("select status from campaign").fetchone()[0] == "finished"
    second = con.execute("select json_extract(data, '$.job') from event where kind='model_server.restarted'"
                         ).fetchone()[0]
    assert second and second != first
    before, after = con.execute("select sum(created_at < (select created_at from event where "
                                "kind='model_server.restarted')), sum(created_at > (select created_at from event "
                                "where kind='model_server.restarted')) from llm_call where error = ''").fetchone()
    assert before >= 3 and after >= 1  # the agents talked to both servers
    assert (folder / "served" / f"endpoint-{second}").exists()
    wait_for("the server to be cancelled at the end", lambda: not listed(second), 60)
    assert not (folder / "served" / "job").exists()
