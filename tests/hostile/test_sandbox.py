"""The sandbox's construction: bwrap and apptainer command lines, detection, `auto`, refusals."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from autosci_hpc.config import ConfigError, load_config
from autosci_hpc.execution import sandbox
from autosci_hpc.execution.sandbox import (DATA_MOUNT, TRIAL_MOUNT, Policy, SandboxError, apptainer_argv,
                                           bwrap_argv, campaign_sandbox, resolve, wrap)

from hostile import skip_without_bwrap


def pairs(argv: list[str], flag: str, arity: int = 2) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1:i + 1 + arity]) for i, a in enumerate(argv) if a == flag]


def test_bwrap_argv_shows_only_what_the_policy_names(tmp_path: Path) -> None:
    policy = Policy(mode="bwrap", folder=str(tmp_path / "t"), data=str(tmp_path / "d"))
    argv = bwrap_argv(["python", "train.py"], policy)
    assert argv[-2:] == ["python", "train.py"] and argv[argv.index("--") - 2:argv.index("--")] == [
        "--chdir", f"{TRIAL_MOUNT}/work"]
    assert {"--unshare-all", "--die-with-parent", "--new-session"} <= set(argv) and "--share-net" not in argv
    assert (str(tmp_path / "t"), TRIAL_MOUNT) in pairs(argv, "--bind")  # the only read-write mount
    assert len(pairs(argv, "--bind")) == 1
    assert (str(tmp_path / "d"), DATA_MOUNT) in pairs(argv, "--ro-bind")
    assert ("/proc",) in pairs(argv, "--proc", 1) and ("/tmp",) in pairs(argv, "--tmpfs", 1)
    sources = {p[0] for p in pairs(argv, "--ro-bind") + pairs(argv, "--ro-bind-try")}
    assert sys.prefix in sources and "/etc" not in sources and "/" not in sources
    assert str(Path.home()) not in sources
    assert "--share-net" in bwrap_argv(["true"], Policy(mode="bwrap", folder=str(tmp_path), network=True))


def test_apptainer_argv(tmp_path: Path) -> None:
    policy = Policy(mode="apptainer", folder=str(tmp_path / "t"), data=str(tmp_path / "d"),
                    image="/img/py.sif")
    argv = apptainer_argv(["python", "train.py"], policy)
    assert argv[:3] == ["apptainer", "exec", "--containall"]
    assert argv[-3:] == ["/img/py.sif", "python", "train.py"]
    binds = [b for (b,) in pairs(argv, "--bind", 1)]
    assert f"{tmp_path / 't'}:{TRIAL_MOUNT}:rw" in binds and f"{tmp_path / 'd'}:{DATA_MOUNT}:ro" in binds
    assert all(b.endswith(":ro") for b in binds if TRIAL_MOUNT not in b)
    assert "--no-home" in argv and ("--network", "none") in [tuple(argv[i:i + 2]) for i in range(len(argv))]
    assert argv[argv.index("--pwd") + 1] == f"{TRIAL_MOUNT}/work"
    with pytest.raises(SandboxError, match="sandbox_image"):
        apptainer_argv(["true"], Policy(mode="apptainer", folder=str(tmp_path)))


def test_apptainer_wrap_passes_the_environment_as_apptainerenv(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "probe", lambda mode, image="": (True, "stub"))
    folder = tmp_path / "t"
    argv, env = wrap(["python", f"{folder}/work/x.py", "--metrics", f"{folder}/metrics.json"],
                     {"PATH": "/usr/bin", "AUTOSCI_SEED": "3", "AUTOSCI_METRICS": f"{folder}/metrics.json",
                      "ANTHROPIC_API_KEY": "sk-secret", "AUTOSCI_TRIAL_ID": "12"},
                     Policy(mode="apptainer", folder=str(folder), image="/img/py.sif"))
    assert argv[-4:] == ["python", f"{TRIAL_MOUNT}/work/x.py", "--metrics", f"{TRIAL_MOUNT}/metrics.json"]
    assert env["APPTAINERENV_AUTOSCI_SEED"] == "3"
    assert env["APPTAINERENV_AUTOSCI_METRICS"] == f"{TRIAL_MOUNT}/metrics.json"
    assert not any("sk-secret" in v for v in env.values()) and "APPTAINERENV_AUTOSCI_TRIAL_ID" not in env


def test_none_passes_through(tmp_path: Path) -> None:
    env = {"A": "1", "ANTHROPIC_API_KEY": "k"}
    assert wrap(["x"], env, Policy(mode="none", folder=str(tmp_path))) == (["x"], env)


def test_the_probe_really_runs_the_sandbox() -> None:
    skip_without_bwrap()
    sandbox.probe.cache_clear()
    assert sandbox.probe("bwrap")[0] and resolve("auto")[0] == "bwrap"


def test_a_bwrap_that_cannot_build_a_sandbox_is_not_taken(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed is not enough (user namespaces may be disabled): the probe runs it."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    sandbox.probe.cache_clear()
    try:
        ok, why = sandbox.probe("bwrap")
        assert not ok and "namespace" in why
        mode, why = resolve("auto")
        assert mode == "none" and "no sandbox works here" in why
        with pytest.raises(SandboxError, match="executor.sandbox=bwrap"):
            resolve("bwrap")
        with pytest.raises(SandboxError, match="not available"):
            wrap(["true"], {}, Policy(mode="bwrap", folder=str(tmp_path)))
    finally:
        sandbox.probe.cache_clear()


def test_a_key_file_trial_code_could_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def key_at(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("sk-test")
        return path

    def config(key: Path, mode: str) -> object:
        return load_config(None, [f"campaign.folder={tmp_path / 'campaign'}", f"executor.sandbox={mode}",
                                  f"llm.api_key_file={key}"])

    inside = key_at(tmp_path / "campaign" / "key")
    with pytest.raises(ConfigError, match="api_key_file"):
        campaign_sandbox(config(inside, "none"), tmp_path / "campaign")
    venv = tmp_path / "venv"
    monkeypatch.setattr(sandbox, "python_roots", lambda: [str(venv)])
    monkeypatch.setattr(sandbox, "probe", lambda mode, image="": (True, "stub"))
    with pytest.raises(ConfigError, match="inside"):
        campaign_sandbox(config(key_at(venv / "key"), "bwrap"), tmp_path / "campaign")
    outside = key_at(tmp_path / "home" / "key")
    settings, _ = campaign_sandbox(config(outside, "bwrap"), tmp_path / "campaign")
    assert str(outside) not in settings.model_dump_json()  # the key file's path never travels to a node


def test_the_policy_refuses_to_show_the_database(tmp_path: Path) -> None:
    skip_without_bwrap()
    policy = Policy(mode="bwrap", folder=str(tmp_path), forbidden=(str(tmp_path / "state.db"),))
    with pytest.raises(SandboxError, match="state.db"):
        wrap(["true"], {}, policy)


def test_an_unknown_sandbox_is_one_config_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="executor.sandbox"):
        load_config(None, ["executor.sandbox=docker"])


def test_doctor_reports_the_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    from autosci_hpc.cli import main

    main(["doctor", "/tmp"])
    out = capsys.readouterr().out
    assert "sandbox for trial code" in out and "bwrap:" in out and "executor.sandbox=auto uses:" in out
    expected = "bwrap" if shutil.which("bwrap") and sandbox.probe("bwrap")[0] else "none"
    assert f"executor.sandbox=auto uses: {expected}" in out


def test_only_a_task_that_declares_the_network_gets_it(tmp_path: Path) -> None:
    import shutil

    from autosci_hpc.coordination.coordinator import Coordinator
    from autosci_hpc.execution.sandbox import bwrap_argv
    from helpers import FIXTURE_TASKS, campaign_config

    skip_without_bwrap()
    for declared in (False, True):
        task = tmp_path / f"toy-{declared}"
        shutil.copytree(FIXTURE_TASKS / "toy", task)
        if declared:
            (task / "task.yaml").write_text((task / "task.yaml").read_text() + "network: true\n")
        config = campaign_config(tmp_path / str(declared), "toy", f"task.path={task}", "executor.sandbox=bwrap")
        settings = Coordinator(config, config.campaign_folder()).sandbox
        argv = bwrap_argv(["true"], settings.policy(str(tmp_path)))
        assert settings.network is declared and ("--share-net" in argv) is declared
