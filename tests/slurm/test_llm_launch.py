"""The whole path a researcher runs, on the test cluster: `sbatch sbatch/launch_campaign.sh`
-> `autosci coordinate` -> agents as processes of their own -> a model over HTTP (the stand-in, an
OpenAI-compatible server on 127.0.0.1) -> a code edit of `train.py` -> trials as array jobs -> a
promotion; and the coordinator's job requeued while an experimenter's conversation is in the middle
of a request, with nothing lost or doubled and that conversation's spend accounted once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelserver import Brain, ModelServer, Turn  # noqa: E402
from test_launch import query, requeued_and_consistent, wait_for  # noqa: E402

pytestmark = pytest.mark.slurm


def second_implementation_request(turn: Turn) -> bool:
    return "submit" in turn.tools and turn.turn == 2


@pytest.mark.slow
def test_llm_agents_over_http_through_sbatch_with_a_requeue_mid_conversation(
        tmp_path: Path, slurm_cluster: object) -> None:
    task_dir = tmp_path / "toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    folder = tmp_path / "campaign"
    out = tmp_path / "coordinator.out"
    partition = getattr(slurm_cluster, "partition")
    with ModelServer(Brain(implement_reads=2), hold=second_implementation_request) as server:
        argv = ["sbatch", "--parsable", f"--output={out}", f"--chdir={ROOT}", f"--partition={partition}",
                "--time=15", "--export=ALL,AUTOSCI_VENV=" + str(Path(sys.executable).parent.parent),
                str(ROOT / "sbatch" / "launch_campaign.sh"), str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
                f"campaign.folder={folder}", f"task.path={task_dir}", "budget.trials=15",
                "executor.kind=slurm", f"executor.slurm.partition={partition}", "executor.slurm.time_min=5",
                "executor.result_grace_s=5", "coordination.poll_interval_s=0.2",
                "coordination.agent_processes=true", "coordination.critics_per_proposal=1",
                # one team (y, the code change's focus) with one experimenter: candidates one after the
                # other, so the code change is not overtaken by another promotion while it runs (stale)
                "coordination.teams=1",
                "llm.backend=openai", f"llm.base_url={server.openai_url()}", "llm.model=stand-in",
                "llm.prices.stand-in.input=1", "llm.prices.stand-in.output=1", "llm.smoke_run=false"]
        job = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
        try:
            wait_for("an experimenter in the middle of its conversation", server.held.is_set, 300)
            subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
            wait_for("the requeue", lambda: query(folder, "select 1 from event where kind='campaign.requeued'"))
            server.release.set()  # the held reply goes to a process that is gone
            wait_for("the campaign to finish",
                     lambda: (query(folder, "select status from campaign") or [("",)])[0][0] == "finished", 420)
            wait_for("the job to end", lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                                                              text=True).stdout.strip() == "", 60)
        finally:
            server.release.set()
            subprocess.run(["scancel", job], capture_output=True)
    con, rows = requeued_and_consistent(folder, out)
    assert con.execute("select count(*) from proposal where status='claimed'").fetchone()[0] == 0
    # Every trial ran as a Slurm job, batches as array jobs (ids <array>_<index>).
    assert con.execute("select count(*) from trial where job_id != ''").fetchone()[0] == rows
    assert con.execute("select max(n) from (select count(*) n from trial where array_index is not null "
                       "group by substr(job_id, 1, instr(job_id, '_')))").fetchone()[0] >= 2
    # A code edit of train.py was promoted.
    edited = con.execute("select c.snapshot_id from champion c join proposal p on p.id = c.proposal_id "
                         "where p.edits like '%train.py%'").fetchall()
    assert edited, "no champion came from the code-editing proposal"
    assert "-0.3  # y held at its optimum" in (folder / "snapshots" / edited[0][0] / "train.py").read_text()
    # Spend: one llm_call row per reply an agent received. The held reply's agent was stopped with the
    # coordinator before it came back, so it is the one request answered and not accounted (not twice).
    calls = con.execute("select count(*), sum(cost_usd) from llm_call where error = ''").fetchone()
    assert calls[0] == len(server.answered) - 1, (calls, len(server.answered))
    assert calls[1] > 0
