"""Campaign config: layering, and one clear message for a bad key or value, with nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autosci_hpc.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "budget: {trials: 12}\ncoordination: {teams: 3}\n")
    config = load_config(path, ["budget.trials=20"])
    assert config.budget.trials == 20  # the command line wins over the file
    assert config.coordination.teams == 3  # the file wins over the defaults
    assert config.coordination.stagnation_window == 10  # the paper's default


def test_unknown_key_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "coordination:\n  teams: 2\n  stagnaton_window: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "coordination.stagnaton_window" in message
    assert "stagnation_window" in message and "teams" in message  # the valid keys


def test_unknown_key_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="command line: unknown key 'budget.trails'"):
        load_config(None, ["budget.trails=3"])


def test_bad_value_names_its_source_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "promotion: {seeds: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "promotion.seeds" in str(info.value)
    with pytest.raises(ConfigError, match="command line: bad value for 'executor.kind'"):
        load_config(path, ["promotion.seeds=2", "executor.kind=kubernetes"])


@pytest.mark.parametrize("overrides, says", [
    (["budget.wall_clock_min=.inf"], "bad value for 'budget.wall_clock_min': Input should be a finite number"),
    (["promotion.alpha=.nan"], "bad value for 'promotion.alpha': Input should be a finite number"),
    (["coordination.teams=100000"], "bad value for 'coordination.teams': Input should be less than or equal to 64"),
    (["coordination.teams=64", "coordination.analysts_per_team=4"],
     "bad value for 'coordination': teams x (analysts_per_team + experimenters_per_team) is 384 agents; at most 256"),
    (["budget.trials=[", "budget.wall_clock_min=3"], "command line: cannot parse override 'budget.trials=['"),
    (["campaign.name=${nowhere}"], "cannot parse override 'campaign.name=${nowhere}': Interpolation key 'nowhere'"),
    (["promotion.seeds=0", "budget.trials=x"], "(and 1 more bad value(s))"),
])
def test_values_no_campaign_can_run_on_are_one_line(overrides: list[str], says: str) -> None:
    """Infinity and NaN (no budget at all, and no JSON record), a roster of more agents than the
    coordinator can run, overrides that are not YAML: each is refused in one line that names it."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert says in message and "\n" not in message and "{" not in message.split(says)[-1]


def test_a_yaml_error_in_a_file_is_one_line_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "campaign: {name: x\nbudget: [1, 2\n"))
    assert str(info.value).startswith(f"{tmp_path / 'campaign.yaml'}: not valid YAML: line ")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"campaign.yaml: Interpolation key 'budget.nothing' not found$"):
        load_config(write(tmp_path, "campaign: {name: '${budget.nothing}'}\n"))


def test_section_given_a_scalar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'budget' must be a section"):
        load_config(write(tmp_path, "budget: 10\n"))


@pytest.mark.parametrize("text,needle", [
    ("campaign: {name: x}\nbudget: {trails: 5}\n", "unknown key 'budget.trails'"),
    ("campaign: {name: x}\ncoordination: {teams: many}\n", "bad value for 'coordination.teams'"),
])
def test_cli_gives_one_message_and_creates_nothing(tmp_path: Path, text: str, needle: str) -> None:
    root = tmp_path / "runs"
    path = write(tmp_path, text)
    result = subprocess.run(
        [sys.executable, "-m", "autosci_hpc.cli", "run", str(path), f"campaign.root={root}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert needle in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not root.exists()


def test_a_cluster_file_merges_over_the_campaign_file(tmp_path: Path) -> None:
    campaign = write(tmp_path, "budget: {trials: 12}\nexecutor: {result_grace_s: 3}\n")
    config = load_config([campaign, ROOT / "configs" / "cluster" / "h100_example.yaml"], ["executor.slurm.mem_gb=80"])
    assert config.budget.trials == 12 and config.executor.kind == "slurm"
    assert config.executor.slurm.gres == "gpu:h100:1" and config.executor.slurm.mem_gb == 80
    assert config.executor.result_grace_s == 60  # the later file wins
    assert config.executor.slurm.setup[0].startswith("module load")


def test_every_shipped_config_is_valid() -> None:
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        load_config(path)


def test_an_unknown_coordination_mode_is_refused_naming_the_modes() -> None:
    with pytest.raises(ConfigError, match="coordination.mode.*decentralized.*single.*central"):
        load_config(None, ["coordination.mode=solo"])
    assert load_config(None, ["coordination.mode=single"]).coordination.mode == "single"


H100 = ROOT / "configs" / "cluster" / "h100_example.yaml"
TOY = ROOT / "configs" / "campaign" / "toy_smoke.yaml"


def test_null_on_the_command_line_unsets_an_optional_setting_of_an_example_file() -> None:
    config = load_config([TOY, H100], ["executor.slurm.account=null", "executor.slurm.qos=null"])
    assert config.executor.slurm.account == "" and config.executor.slurm.qos == ""  # unset: no --account
    assert config.executor.slurm.partition == "gpu-h100"  # the rest of the file stays
    # null is the default for any setting: a number goes back to its default, an optional one to None.
    assert load_config([TOY, H100], ["executor.slurm.cpus_per_task=null"]).executor.slurm.cpus_per_task == 1
    assert load_config([TOY], ["budget.llm_dollars=5", "budget.llm_dollars=null"]).budget.llm_dollars is None


def test_a_mapping_on_the_command_line_replaces_the_files_mapping() -> None:
    assert load_config([TOY, H100]).executor.slurm.additional == {"constraint": "h100", "mail-type": "FAIL"}
    assert load_config([TOY, H100], ["executor.slurm.additional={}"]).executor.slurm.additional == {}
    replaced = load_config([TOY, H100], ["executor.slurm.additional={constraint: a100}"])
    assert replaced.executor.slurm.additional == {"constraint": "a100"}
    # One option removed, the others kept.
    one = load_config([TOY, H100], ["executor.slurm.additional.constraint=null"])
    assert one.executor.slurm.additional == {"mail-type": "FAIL"}
    # Sections still merge key by key.
    merged = load_config([TOY, H100], ["executor.slurm.partition=h100"])
    assert merged.executor.slurm.account == "my-lab-account" and merged.executor.slurm.partition == "h100"
