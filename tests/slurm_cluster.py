"""pytest plumbing for the tests that need a real SLURM cluster (imported by tests/conftest.py,
so that tests anywhere, e.g. the executor conformance suite, can ask for it).

Nothing here is global: no hooks, no markers, no import-time side effects.
Tests opt in by asking for the ``slurm_cluster`` fixture, which

* reads the env file written by ``tests/slurm/cluster.sh up``
  (``$AUTOSCI_SLURM_DIR/env.sh``, default ``/tmp/autosci-slurm/env.sh``) and
  sets ``SLURM_CONF`` (and the other variables in it) in ``os.environ`` for
  the session unless already set;
* puts ``tests/slurm`` on ``sys.path`` and ``PYTHONPATH`` so that job
  functions in ``jobfns.py`` can be imported on the node (sbatch exports the
  submitting environment to the job);
* checks that ``sinfo`` answers; if not, skips the test, or fails it when
  ``AUTOSCI_REQUIRE_SLURM=1`` (CI, where a missing cluster is a bug).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent / "slurm"

SKIP_MESSAGE = (
    "SLURM tests need a cluster: run `bash tests/slurm/install.sh && "
    "bash tests/slurm/cluster.sh up` (or `make slurm-up`) first"
)


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running test cluster."""

    conf: str  # path of slurm.conf (SLURM_CONF)
    partition: str  # default CPU partition
    gpu_partition: str  # partition named like a GPU one, with fake h100 GPUs
    #: partition of two nodes (each with its own fake h100 GPUs), for jobs of --nodes=2; "" when the
    #: cluster runs one node (cluster.sh with AUTOSCI_SLURM_NODES=1)
    pair_partition: str
    accounting: bool  # slurmdbd is up: sacct knows finished jobs
    state_dir: Path


def state_dir() -> Path:
    return Path(os.environ.get("AUTOSCI_SLURM_DIR", "/tmp/autosci-slurm"))


def read_env_file(path: Path) -> Dict[str, str]:
    """Parse the ``export NAME=value`` lines written by cluster.sh."""
    env: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        name, sep, value = line[len("export ") :].partition("=")
        if sep:
            words = shlex.split(value)
            env[name.strip()] = words[0] if words else ""
    return env


def _cluster_problem(env: Dict[str, str]) -> Optional[str]:
    """Why the cluster cannot be used, or None if `sinfo` answers."""
    if not shutil.which("sinfo"):
        return "`sinfo` is not installed"
    if not env.get("SLURM_CONF"):
        return f"no SLURM_CONF in the environment and no env file at {state_dir() / 'env.sh'}"
    if not Path(env["SLURM_CONF"]).is_file():
        return f"SLURM_CONF={env['SLURM_CONF']} does not exist"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out (is slurmctld running?)"
    if proc.returncode != 0:
        return f"`sinfo` failed: {(proc.stderr or proc.stdout).strip()}"
    if not proc.stdout.strip():
        return "`sinfo` lists no partition"
    return None


def _has_accounting() -> bool:
    """True if slurmctld sends job records to slurmdbd (so `sacct` works)."""
    proc = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
    )
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "AccountingStorageType":
            return "slurmdbd" in value
    return False


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    env_file = state_dir() / "env.sh"
    from_file = read_env_file(env_file) if env_file.is_file() else {}

    with pytest.MonkeyPatch.context() as mp:
        # Values already in the environment win over the env file.
        for name, value in from_file.items():
            if name not in os.environ:
                mp.setenv(name, value)

        problem = _cluster_problem(dict(os.environ))
        if problem is not None:
            if os.environ.get("AUTOSCI_REQUIRE_SLURM") == "1":
                pytest.fail(
                    f"AUTOSCI_REQUIRE_SLURM=1 but the SLURM test cluster is not usable: "
                    f"{problem}. Start it with `bash tests/slurm/install.sh && "
                    f"bash tests/slurm/cluster.sh up`; daemon logs are in "
                    f"{state_dir() / 'log'}.",
                    pytrace=False,
                )
            pytest.skip(f"{SKIP_MESSAGE} ({problem})")

        # Job functions (jobfns.py) must be importable in the job on the node.
        here = str(HERE)
        if here not in sys.path:
            mp.syspath_prepend(here)
        pythonpath = os.environ.get("PYTHONPATH", "")
        if here not in pythonpath.split(os.pathsep):
            mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, pythonpath) if p))

        yield SlurmCluster(
            conf=os.environ["SLURM_CONF"],
            partition=os.environ.get("AUTOSCI_SLURM_PARTITION", "cpu"),
            gpu_partition=os.environ.get("AUTOSCI_SLURM_GPU_PARTITION", "h100"),
            pair_partition=os.environ.get("AUTOSCI_SLURM_PAIR_PARTITION", ""),
            accounting=_has_accounting(),
            state_dir=state_dir(),
        )
