"""An open model served on the cluster for the agents: a Slurm job of its own, started, watched,
restarted and stopped by the coordinator (`llm.serve`).

The job runs the user's server command (vLLM, SGLang, anything OpenAI-compatible) on a port it
chooses, and announces `http://<node>:<port>/v1` in `<campaign>/served/endpoint-<job id>` (an atomic
rename on the shared filesystem). The coordinator waits until that endpoint answers a model-list
request, points the agents at it, checks the job at every tick (one `squeue` call), submits it again
if it died (up to `llm.serve.max_restarts`), and cancels it when the campaign's coordinator stops.
A coordinator that resumes re-attaches to a server job that is still running.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ..config import LLMSection, ServeSection
from ..execution.slurm import clean_slurm_env
from ..layout import CampaignLayout

ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUED")


class ServeError(RuntimeError):
    """The served model could not be started, did not answer in time, or died too often."""


def job_script(serve: ServeSection, folder: Path) -> str:
    """The batch script: choose a port, announce the endpoint, then become the server."""
    python = shlex.quote(sys.executable)
    command = serve.command.replace("{python}", python).replace("{port}", '"$PORT"')
    where = shlex.quote(str(folder))
    lines = ["#!/bin/bash", "set -u", *serve.setup,
             f"PORT=$({python} -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); "
             "print(s.getsockname()[1])')",
             f'printf "http://%s:%s/v1\\n" "$(hostname)" "$PORT" > {where}/endpoint-"$SLURM_JOB_ID".tmp',
             f'mv {where}/endpoint-"$SLURM_JOB_ID".tmp {where}/endpoint-"$SLURM_JOB_ID"',
             f"exec {command}", ""]
    return "\n".join(lines)


class ServedModel:
    def __init__(self, llm: LLMSection, campaign_folder: Path, *, name: str = "autosci-model",
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 answers: Optional[Callable[[str], bool]] = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.llm = llm
        self.serve = llm.serve
        self.folder = CampaignLayout(campaign_folder).served
        self.name = name
        self._run = run
        self._answers = answers or self._probe
        self._sleep = sleep
        self._clock = clock
        self.url = ""

    # ---- state kept in the campaign folder (a resumed coordinator re-attaches) ----------------------

    @property
    def job_id(self) -> str:
        path = self.folder / "job"
        return path.read_text().strip() if path.exists() else ""

    @property
    def restarts(self) -> int:
        path = self.folder / "restarts"
        return int(path.read_text() or 0) if path.exists() else 0

    def _write(self, name: str, value: str) -> None:
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(value)
        tmp.replace(self.folder / name)

    # ---- Slurm ------------------------------------------------------------------------------------

    def _slurm(self, argv: list[str]) -> subprocess.CompletedProcess:
        with clean_slurm_env():
            return self._run(argv, capture_output=True, text=True, timeout=60)

    def submit(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        script = self.folder / "serve.sh"
        script.write_text(job_script(self.serve, self.folder))
        argv = ["sbatch", "--parsable", f"--job-name={self.name}", f"--output={self.folder / 'server-%j.out'}",
                f"--cpus-per-task={self.serve.cpus_per_task}", f"--mem={int(self.serve.mem_gb * 1024)}M",
                f"--time={self.serve.time_min}"]
        for flag, value in (("partition", self.serve.partition), ("account", self.serve.account),
                            ("gres", self.serve.gres)):
            if value:
                argv.append(f"--{flag}={value}")
        out = self._slurm(argv + [str(script)])
        if out.returncode != 0:
            lines = (out.stderr or out.stdout).strip().splitlines()
            raise ServeError(f"llm.serve: sbatch refused the model server job: {lines[-1] if lines else out.returncode}")
        job = out.stdout.strip().split(";")[0]
        self._write("job", job)
        return job

    def state(self, job: str) -> str:
        """The job's Slurm state; "" when Slurm no longer lists it; "UNKNOWN" when it could not say."""
        out = self._slurm(["squeue", "-h", "-j", job, "-o", "%T"])
        if out.returncode != 0:
            return "" if "invalid job id" in (out.stderr or "").lower() else "UNKNOWN"
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""

    def alive(self) -> bool:
        job = self.job_id
        if not job:
            return False
        state = self.state(job)
        return state == "UNKNOWN" or state in ACTIVE  # a scheduler hiccup is not a death

    def stop(self) -> None:
        job = self.job_id
        if job:
            self._slurm(["scancel", job])
            (self.folder / "job").unlink(missing_ok=True)

    # ---- the endpoint -----------------------------------------------------------------------------

    def _probe(self, url: str) -> bool:
        from .probe import probe

        return probe(self.llm.model_copy(update={"base_url": url, "backend": "openai"}), None,
                     timeout_s=5.0).ok

    def wait(self) -> str:
        """Block until the current job announces its endpoint and it answers; the URL."""
        job = self.job_id
        deadline = self._clock() + self.serve.startup_timeout_s
        announced = self.folder / f"endpoint-{job}"
        while True:
            if announced.exists():
                url = announced.read_text().strip()
                if url and self._answers(url):
                    self.url = url
                    return url
            if not self.alive():
                raise ServeError(f"llm.serve: the model server job {job} ended before it answered "
                                 f"(see {self.folder / ('server-' + job + '.out')})")
            if self._clock() > deadline:
                raise ServeError(f"llm.serve: the model server job {job} did not answer within "
                                 f"{self.serve.startup_timeout_s:g} s (llm.serve.startup_timeout_s)")
            self._sleep(2.0)

    def ensure(self) -> str:
        """The endpoint of a live server: re-attach, or submit (again) and wait. The URL."""
        if self.alive():
            return self.url or self.wait()
        if self.job_id:  # there was a server, and it died
            if self.restarts >= self.serve.max_restarts:
                raise ServeError(f"llm.serve: the model server died {self.restarts + 1} times "
                                 f"(llm.serve.max_restarts={self.serve.max_restarts})")
            self._write("restarts", str(self.restarts + 1))
        self.url = ""
        self.submit()
        return self.wait()
