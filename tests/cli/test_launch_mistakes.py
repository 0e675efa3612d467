"""Launch mistakes: each one line naming the key or file and what to do, a non-zero exit, and nothing
created (no campaign folder, no state.db). The SLURM cases use fake `sinfo` / `sbatch` / `scontrol` on
PATH, so they run without a cluster; a refusal sbatch makes mid-campaign is one line too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autosci_hpc.config import load_config
from autosci_hpc.preflight import refusal_line, sbatch_flags

from helpers import FIXTURE_TASKS, ROOT

TOY = ROOT / "configs" / "campaign" / "toy_smoke.yaml"
H100 = ROOT / "configs" / "cluster" / "h100_example.yaml"

FAKE_SINFO_DOWN = """#!/bin/sh
echo "slurm_load_partitions: Unable to contact slurm controller (connect failure)" >&2
exit 1
"""
FAKE_SINFO_UP = """#!/bin/sh
echo "gpu-h100*"
"""
FAKE_SCONTROL = """#!/bin/sh
echo "MaxArraySize            = 1001"
"""
# --test-only: refuse a feature (constraint) or an account, as a cluster without them does; a real
# submission: refuse the features too, and otherwise a limit, so that the campaign stops at once.
FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM_LOG"
failed="sbatch: error: Batch job submission failed:"
for last; do :; done
case " $* " in
  *" --test-only "*)
    case " $* " in *--constraint=*) echo "$failed Invalid feature specification" >&2; exit 1;; esac
    case " $* " in *--account=*)
      echo "$failed Invalid account or account/partition combination specified" >&2; exit 1;; esac
    echo "sbatch: Job 12 to start at 2026-01-01T00:00:00 using 1 processors on nodes n1" >&2
    exit 0;;
esac
cat "$last" >> "$FAKE_SLURM_LOG"
if grep -q -- "--constraint" "$last"; then
  echo "$failed Invalid feature specification" >&2; exit 1
fi
echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
echo "$failed Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" >&2
exit 1
"""


def fake_bin(tmp_path: Path, sinfo: str = FAKE_SINFO_UP, test_only_ok: bool = False) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    sbatch = FAKE_SBATCH.replace('case " $* " in *--constraint=*)', 'case " $* " in *--never-matches=*)') \
        if test_only_ok else FAKE_SBATCH
    # srun only has to exist: submitit looks for it to decide that it is on a cluster (never run here)
    for name, text in (("sinfo", sinfo), ("sbatch", sbatch), ("scontrol", FAKE_SCONTROL),
                       ("srun", "#!/bin/sh\nexit 1\n")):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def launch(tmp_path: Path, *args: str, path: Path | None = None, env: dict[str, str] | None = None,
           config: Path = TOY, task: Path = FIXTURE_TASKS / "toy") -> subprocess.CompletedProcess[str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    environ.update(env or {})
    environ["FAKE_SLURM_LOG"] = str(tmp_path / "sbatch.log")
    if path is not None:
        environ["PATH"] = f"{path}:{environ['PATH']}"
    environ["PYTHONPATH"] = f"{ROOT}:{environ.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "run", str(config), *args,
                           f"campaign.root={tmp_path / 'runs'}", f"task.path={task}",
                           "--quiet"],
                          capture_output=True, text=True, cwd=cwd, env=environ, timeout=300)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))
    assert not list((tmp_path / "cwd").iterdir())


def test_a_campaign_config_that_is_not_yaml_is_one_line_with_its_place(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("campaign: {name: x\nbudget: [1, 2\n")
    result = launch(tmp_path, config=broken)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"autosci: {broken}: not valid YAML: line ") and "column" in line
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("text, says", [("lr: [0.1\n", "not valid YAML: line 2, column 1"),
                                        ("- lr\n- 0.1\n", "must be a mapping of config keys, not a list")])
def test_a_task_whose_program_config_is_broken_is_refused_before_anything_starts(
        tmp_path: Path, text: str, says: str) -> None:
    import shutil

    task = tmp_path / "task"
    shutil.copytree(FIXTURE_TASKS / "toy", task)
    (task / "program" / "config.yaml").write_text(text)
    result = launch(tmp_path, task=task)
    assert result.returncode == 2
    line = one_line(result)
    assert f"{task / 'program' / 'config.yaml'}: {says}" in line
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("folder, says", [("afile", "exists and is not a folder"),
                                          ("afile/campaign", "is not a folder, so")])
def test_a_campaign_folder_that_cannot_be_made(tmp_path: Path, folder: str, says: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    result = launch(tmp_path, f"campaign.folder={tmp_path / folder}")
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("autosci: campaign.folder: ") and says in line
    assert_nothing_created(tmp_path)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_a_missing_key_file(tmp_path: Path) -> None:
    result = launch(tmp_path, "llm.backend=anthropic", "llm.api_key_file=/nonexistent/key")
    assert result.returncode == 2
    line = one_line(result)
    assert "llm.api_key_file" in line and "/nonexistent/key" in line
    assert_nothing_created(tmp_path)


def test_a_key_file_readable_by_others(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-ant-secret-value\n")
    key.chmod(0o644)
    result = launch(tmp_path, "llm.backend=anthropic", f"llm.api_key_file={key}")
    assert result.returncode == 2
    line = one_line(result)
    assert "llm.api_key_file" in line and f"chmod 600 {key}" in line and "secret-value" not in line
    assert_nothing_created(tmp_path)


def test_no_api_key_at_all(tmp_path: Path) -> None:
    result = launch(tmp_path, "llm.backend=anthropic")
    assert result.returncode == 2 and "ANTHROPIC_API_KEY" in one_line(result)
    assert_nothing_created(tmp_path)


def test_an_unknown_task_override(tmp_path: Path) -> None:
    result = launch(tmp_path, "task.overrides={model.nonexistent: 3}")
    assert result.returncode == 2
    line = one_line(result)
    assert "task.overrides" in line and "model.nonexistent" in line and "TaskError" not in line
    assert_nothing_created(tmp_path)


def test_slurm_with_no_controller_answering(tmp_path: Path) -> None:
    result = launch(tmp_path, "executor.kind=slurm", path=fake_bin(tmp_path, sinfo=FAKE_SINFO_DOWN))
    assert result.returncode == 2
    line = one_line(result)
    assert "no SLURM controller answered" in line and "autosci doctor" in line
    assert "Unable to contact slurm controller" in line
    assert_nothing_created(tmp_path)
    assert not (tmp_path / "sbatch.log").exists()  # nothing was submitted
    # ... and `autosci doctor`, which the line points to, says the same.
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    doctor = subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "doctor", str(tmp_path / "cwd")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert "controller: does not answer: slurm_load_partitions: Unable to contact" in doctor.stdout


def test_slurm_commands_missing_altogether(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    python_dir = str(Path(sys.executable).parent)
    result = launch(tmp_path, "executor.kind=slurm", env={"PATH": f"{empty}:{python_dir}"})
    assert result.returncode == 2 and "sinfo" in one_line(result) and "autosci doctor" in one_line(result)
    assert_nothing_created(tmp_path)


def test_an_sbatch_refusal_names_the_option_and_creates_nothing(tmp_path: Path) -> None:
    result = launch(tmp_path, str(H100), path=fake_bin(tmp_path))
    assert result.returncode == 2
    line = one_line(result)
    assert "Invalid feature specification" in line and "executor.slurm.additional.constraint=h100" in line
    assert "SubmissionError" not in line
    assert_nothing_created(tmp_path)
    assert "--test-only" in (tmp_path / "sbatch.log").read_text()


def test_account_null_and_additional_empty_reach_sbatch(tmp_path: Path) -> None:
    """The example's account and constraint, unset from the command line: sbatch is asked without
    them, by the launch check and by the campaign's own submission (which a limit then stops)."""
    result = launch(tmp_path, str(H100), "executor.slurm.account=null", "executor.slurm.additional={}",
                    path=fake_bin(tmp_path))
    log = (tmp_path / "sbatch.log").read_text()
    assert "--test-only" in log and "--partition=gpu-h100" in log
    assert "--account" not in log and "constraint" not in log and "mail-type" not in log
    assert "#SBATCH --partition=gpu-h100" in log  # the campaign's own submission got this far
    # ... and the limit it met is one line, naming what sbatch said.
    assert result.returncode == 2
    line = one_line(result)
    assert "Job violates accounting/QOS policy" in line and "SubmissionError" not in line


def test_a_refusal_during_the_campaign_is_one_line_naming_the_option(tmp_path: Path) -> None:
    result = launch(tmp_path, str(H100), "executor.slurm.account=null",
                    path=fake_bin(tmp_path, test_only_ok=True))
    assert result.returncode == 2
    line = one_line(result)
    assert "Invalid feature specification" in line and "executor.slurm.additional.constraint=h100" in line
    assert "campaign.folder=" in line  # where to resume from


def test_the_sbatch_flags_follow_the_config() -> None:
    config = load_config([TOY, H100], ["executor.slurm.account=null", "executor.slurm.additional={}"])
    flags = sbatch_flags(config)
    assert "--partition=gpu-h100" in flags and "--gres=gpu:h100:1" in flags and "--mem=64GB" in flags
    assert not any(f.startswith(("--account", "--constraint")) for f in flags)
    full = load_config([TOY, H100])
    assert "--constraint=h100" in sbatch_flags(full) and "--account=my-lab-account" in sbatch_flags(full)
    assert "executor.slurm.account=my-lab-account" in refusal_line("Invalid account or account/partition "
                                                                   "combination specified", full)
    assert "executor.slurm.partition" in refusal_line("invalid partition name specified", full)


def test_the_sbatch_flags_ask_for_the_trials_gpus_and_nodes() -> None:
    """What `sbatch --test-only` is asked before a campaign starts is the trials' own job: a trial of two
    GPUs on two nodes is one task per node with one GPU each; a gres the cluster file names is kept."""
    plain = load_config([TOY], ["executor.kind=slurm"])
    assert not any(f.startswith(("--gres", "--nodes")) for f in sbatch_flags(plain))
    flags = sbatch_flags(plain, gpus=2, nodes=2)
    assert {"--gres=gpu:1", "--nodes=2", "--ntasks-per-node=1"} <= set(flags)
    assert "--gres=gpu:2" in sbatch_flags(plain, gpus=2)
    named = sbatch_flags(load_config([TOY, H100]), gpus=4, nodes=2)
    assert [f for f in named if f.startswith("--gres")] == ["--gres=gpu:h100:1"] and "--nodes=2" in named
    assert "task.nodes" in refusal_line("Node count specification invalid", plain)


@pytest.mark.parametrize("kind", ["empty", "directory", "binary"])
def test_a_key_file_that_holds_no_key(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "key"
    if kind == "directory":
        key.mkdir()
    else:
        key.write_bytes(b"" if kind == "empty" else b"\xff\xfe\x00key")
        key.chmod(0o600)
    result = launch(tmp_path, "llm.backend=anthropic", f"llm.api_key_file={key}")
    assert result.returncode == 2
    assert "llm.api_key_file" in one_line(result) and str(key) in one_line(result)
    assert_nothing_created(tmp_path)


@pytest.mark.slurm
def test_the_launch_check_against_a_real_cluster(slurm_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """The example cluster file on a cluster that has neither its partition nor its feature: one line
    naming each setting in turn, nothing created; with them unset or replaced, the check passes."""
    from autosci_hpc.preflight import check_slurm
    from autosci_hpc.config import ConfigError

    full = load_config([TOY, H100])
    with pytest.raises(ConfigError, match=r"executor\.slurm\.partition=gpu-h100"):
        check_slurm(full)
    fixed = [f"executor.slurm.partition={slurm_cluster.gpu_partition}", "executor.slurm.account=null",
             "executor.slurm.mem_gb=1", "executor.slurm.cpus_per_task=1", "executor.slurm.time_min=5"]
    with pytest.raises(ConfigError, match=r"Invalid feature .*executor\.slurm\.additional\.constraint=h100"):
        check_slurm(load_config([TOY, H100], fixed))
    check_slurm(load_config([TOY, H100], fixed + ["executor.slurm.additional={}"]))  # accepted
    result = launch(tmp_path, str(H100), *fixed)
    assert result.returncode == 2 and "executor.slurm.additional.constraint=h100" in one_line(result)
    assert_nothing_created(tmp_path)


@pytest.mark.slurm
def test_the_launch_check_asks_the_real_cluster_about_the_trials_nodes(slurm_cluster) -> None:  # noqa: ANN001
    """A trial on more nodes than the partition has is refused before the campaign starts, in one line
    naming task.nodes; on the partition of two nodes, a trial on two is accepted."""
    from autosci_hpc.preflight import check_slurm
    from autosci_hpc.config import ConfigError

    pair = getattr(slurm_cluster, "pair_partition")
    if not pair:
        pytest.skip("the test cluster runs one node: no partition of two nodes")
    cluster = [f"executor.kind=slurm", "executor.slurm.mem_gb=1", "executor.slurm.cpus_per_task=1",
               "executor.slurm.time_min=5"]
    with pytest.raises(ConfigError, match=r"task\.nodes") as refused:
        check_slurm(load_config([TOY], cluster + [f"executor.slurm.partition={pair}"]), gpus=3, nodes=3)
    assert "\n" not in str(refused.value)
    check_slurm(load_config([TOY], cluster + [f"executor.slurm.partition={pair}"]), gpus=2, nodes=2)


def test_compare_checks_its_launch_too(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env["PYTHONPATH"] = f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"
    result = subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "compare", str(TOY), "llm.backend=anthropic",
                             "llm.api_key_file=/nonexistent/key", f"task.path={FIXTURE_TASKS / 'toy'}",
                             "--out", str(tmp_path / "cmp")], capture_output=True, text=True, cwd=cwd, env=env,
                            timeout=120)
    assert result.returncode == 2 and "llm.api_key_file" in one_line(result)
    assert not (tmp_path / "cmp").exists() and not list(cwd.iterdir())
