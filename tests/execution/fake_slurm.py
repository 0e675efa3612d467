"""A fake Slurm on PATH, for the executor's tests on machines without a cluster.

`FakeSlurm(folder)` writes small `sbatch`, `squeue`, `sacct`, `scontrol`, `scancel`, `srun` and
`sinfo` programs into `folder/bin`; put that first on PATH (`path_env()`, or the `fake_slurm`
fixture) and submitit, the executor and the CLI talk to it as to Slurm. The programs share one JSON
state file (locked with flock), and `sbatch` appends every submission to `sbatch.log`: the count of
real submissions that the consistency checks read, not the database's own count.

With `run_jobs=True`, `sbatch` runs each job (each array task) at once as a background process,
with the variables Slurm gives a job (`SLURM_JOB_ID`, `SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID`);
`srun` drops its options and runs its command with `--output`/`--error` redirected. Job states
follow the processes (RUNNING, then COMPLETED or FAILED by exit code; CANCELLED after `scancel`).
Without it, jobs stay PENDING (for tests that only need the programs on PATH).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "srun", "sinfo")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")


class FakeSlurm:
    def __init__(self, folder: Path, *, run_jobs: bool = False) -> None:
        self.folder = Path(folder)
        self.bin = self.folder / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.state_file = self.folder / "state.json"
        self.log = self.folder / "sbatch.log"
        if not self.state_file.exists():
            self.state_file.write_text(json.dumps({"next_id": 100, "jobs": {}, "run_jobs": run_jobs,
                                                   "requeued": []}))
        here = Path(__file__).resolve().parent
        for name in COMMANDS:
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(here)!r})\n"
                            f"from fake_slurm import main\nsys.exit(main({name!r}, {str(self.state_file)!r}, "
                            f"sys.argv[1:]))\n")
            path.chmod(0o755)

    # ---- what tests read and set ------------------------------------------------------------------

    def path_env(self) -> str:
        return os.pathsep.join([str(self.bin), os.environ.get("PATH", "")])

    def state(self) -> dict[str, Any]:
        with _locked(self.state_file) as state:
            return state

    def submissions(self) -> list[dict[str, Any]]:
        """One entry per sbatch call that was accepted: job id, name, comment, array size."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


# ---- the programs -------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path, write: bool = False) -> Iterator[dict[str, Any]]:
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text())
            yield data
            if write:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data))
                os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _expand(data: dict[str, Any], job_id: str) -> list[str]:
    """A job id, an array task id (7_2) or a whole array (7) -> the keys of the tasks it names."""
    if job_id in data["jobs"]:
        return [job_id]
    return [k for k in data["jobs"] if k.split("_", 1)[0] == job_id]


def _refresh(data: dict[str, Any]) -> None:
    """Running jobs whose process ended become COMPLETED or FAILED (by the exit code they left)."""
    for key, job in data["jobs"].items():
        if job["state"] != "RUNNING" or not job.get("pid"):
            continue
        rc_file = Path(job["rc_file"])
        if rc_file.exists():
            rc = rc_file.read_text().strip()
            job["state"] = "COMPLETED" if rc == "0" else "FAILED"
        elif not _alive(job["pid"]):
            job["state"] = "FAILED"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _directives(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:[= ](.*))?$", line.strip())
        if match:
            out[match.group(1)] = (match.group(2) or "").strip()
    return out


def _sbatch(state_file: Path, argv: list[str]) -> int:
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].startswith("--"):
        key, _, value = rest.pop(0)[2:].partition("=")
        options[key] = value
    if "test-only" in options:  # asks whether the job would be accepted; submits nothing
        print("sbatch: Job 0 to start at 2026-01-01T00:00:00 using 1 processors on nodes fake in partition fake",
              file=sys.stderr)
        return 0
    script_path = Path(rest[0])
    script = script_path.read_text()
    directives = {**_directives(script), **options}
    with _locked(state_file, write=True) as data:
        job_id = str(data["next_id"])
        data["next_id"] += 1
        array = directives.get("array", "")
        count = int(array.split("%")[0].split("-")[1]) + 1 if array else 0
        keys = [f"{job_id}_{i}" for i in range(count)] if count else [job_id]
        for index, key in enumerate(keys):
            data["jobs"][key] = {"state": "PENDING", "name": directives.get("job-name", ""),
                                 "comment": directives.get("comment", ""), "script": str(script_path),
                                 "array_index": index if count else None}
        run = data["run_jobs"]
    with open(state_file.parent / "sbatch.log", "a") as log:
        log.write(json.dumps({"job_id": job_id, "name": directives.get("job-name", ""),
                              "comment": directives.get("comment", ""), "tasks": len(keys)}) + "\n")
    if run:
        for key in keys:
            _start(state_file, key, script_path, job_id)
    print(f"Submitted batch job {job_id}")
    return 0


def _start(state_file: Path, key: str, script_path: Path, job_id: str) -> None:
    env = dict(os.environ, SLURM_JOB_ID=key.replace("_", ""), SLURM_JOBID=key.replace("_", ""))
    if "_" in key:
        env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=key.split("_", 1)[1])
    rc_file = state_file.parent / "jobs" / f"{key}.rc"
    rc_file.parent.mkdir(exist_ok=True)
    wrapper = f"bash {shlex.quote(str(script_path))}; echo $? > {shlex.quote(str(rc_file))}"
    proc = subprocess.Popen(["bash", "-c", wrapper], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with _locked(state_file, write=True) as data:
        data["jobs"][key].update(state="RUNNING", pid=proc.pid, rc_file=str(rc_file))


def _format(template: str, key: str, job: dict[str, Any]) -> str:
    fields = {"i": key, "T": job["state"], "j": job["name"], "k": job["comment"], "A": key.split("_", 1)[0],
              "a": key.split("_", 1)[1] if "_" in key else "N/A"}
    return re.sub(r"%(\w)", lambda m: str(fields.get(m.group(1), "")), template)


def _select(data: dict[str, Any], argv: list[str], name_flags: tuple[str, ...] = ("-n", "--name")) -> list[str]:
    ids = names = None
    for flag in ("-j", "--jobs"):
        if flag in argv:
            ids = argv[argv.index(flag) + 1].split(",")
    for flag in name_flags:
        if flag in argv:
            names = argv[argv.index(flag) + 1].split(",")
    keys = [k for k in data["jobs"] if ids is None or any(k in _expand(data, i) for i in ids)]
    return [k for k in keys if names is None or data["jobs"][k]["name"] in names]


def _squeue(state_file: Path, argv: list[str]) -> int:
    with _locked(state_file, write=True) as data:
        _refresh(data)
        template = argv[argv.index("-o") + 1] if "-o" in argv else "%i|%T"
        everything = "-t" in argv and argv[argv.index("-t") + 1].lower() == "all"
        for key in _select(data, argv):
            job = data["jobs"][key]
            if everything or job["state"] not in TERMINAL:
                print(_format(template, key, job))
    return 0


def _sacct(state_file: Path, argv: list[str]) -> int:
    with _locked(state_file, write=True) as data:
        _refresh(data)
        columns = argv[argv.index("-o") + 1].split(",") if "-o" in argv else ["JobID", "State"]
        letters = {"JobID": "i", "State": "T", "JobName": "j", "Comment": "k"}
        template = "|".join(f"%{letters.get(c, '?')}" for c in columns)
        for key in _select(data, argv, ("--name",)):  # sacct's -n is --noheader
            print(_format(template, key, data["jobs"][key]))
    return 0


def _scancel(state_file: Path, argv: list[str]) -> int:
    with _locked(state_file, write=True) as data:
        for job_id in (a for a in argv if not a.startswith("-")):
            for key in _expand(data, job_id):
                job = data["jobs"][key]
                if job.get("pid") and _alive(job["pid"]):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job["pid"], signal.SIGKILL)
                if job["state"] not in TERMINAL:
                    job["state"] = "CANCELLED"
    return 0


def _scontrol(state_file: Path, argv: list[str]) -> int:
    with _locked(state_file, write=True) as data:
        if argv[:2] == ["show", "config"]:
            print("MaxArraySize            = 1001")
            return 0
        if argv and argv[0] == "requeue":
            data["requeued"].append(argv[1])
            return 0
    print(f"scontrol: fake does not know {' '.join(argv)}", file=sys.stderr)
    return 1


def _srun(argv: list[str]) -> int:
    """Drop srun's options; run the command with --output/--error (Slurm's % patterns filled in)."""
    rest, out, err = list(argv), None, None
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("--output", "-o"):
            out = rest.pop(0)
        elif flag in ("--error", "-e"):
            err = rest.pop(0)
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "0")
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "0")

    def fill(pattern: str) -> str:
        return (pattern.replace("%A", job).replace("%a", task).replace("%j", os.environ.get("SLURM_JOB_ID", "0"))
                .replace("%t", "0"))

    for pattern in (out, err):  # Slurm opens the files on the node; their folder may be new
        if pattern:
            Path(fill(pattern)).parent.mkdir(parents=True, exist_ok=True)
    stdout = open(fill(out), "a") if out else None
    stderr = open(fill(err), "a") if err else None
    return subprocess.call(rest, stdout=stdout, stderr=stderr if stderr else stdout)


def main(name: str, state: str, argv: list[str]) -> int:
    state_file = Path(state)
    if name == "sbatch":
        return _sbatch(state_file, argv)
    if name == "squeue":
        return _squeue(state_file, argv)
    if name == "sacct":
        return _sacct(state_file, argv)
    if name == "scancel":
        return _scancel(state_file, argv)
    if name == "scontrol":
        return _scontrol(state_file, argv)
    if name == "srun":
        return _srun(argv)
    print("cpu* up infinite 1 idle fake")  # sinfo
    return 0
