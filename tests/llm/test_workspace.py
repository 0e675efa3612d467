"""The experimenter's scratch workspace: edits confined to the editable files, nearest lines on a
mismatch, smoke tests that catch broken programs and never see API keys; and the same refusals
through the policy's tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autosci_hpc.config import LLMSection
from autosci_hpc.llm.workspace import Workspace, WorkspaceError, check_edits, read_program
from autosci_hpc.task import Edit, load_task

from llm_fakes import TOY, FakeServer, Script, agent, anthropic_policy, last_results, tool_use, toy_view

LLM = LLMSection()


def workspace(tmp_path: Path, **kwargs) -> Workspace:
    task = load_task(TOY)
    return Workspace.create(task, task.program_dir, tmp_path / "scratch", **kwargs)


@pytest.mark.parametrize("path", ["../config.yaml", "/etc/passwd", "sub/../../config.yaml", "~/x", "..",
                                  "./../train.py", ""])
def test_paths_outside_the_workspace_are_refused(tmp_path: Path, path: str) -> None:
    ws = workspace(tmp_path)
    with pytest.raises(WorkspaceError):
        ws.resolve(path)
    applied, report = ws.apply([Edit(path=path, search="x", replace="y")])
    assert applied == 0 and "NOT applied" in report and ws.edits == []


def test_a_symlink_leading_outside_is_refused_for_reads_and_edits(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "config.yaml"
    secret.write_text("x: 0.0\n")
    ws = workspace(tmp_path)
    (ws.root / "config.yaml").unlink()
    (ws.root / "config.yaml").symlink_to(secret)  # an editable name, pointing outside
    (ws.root / "linked").symlink_to(outside, target_is_directory=True)
    applied, report = ws.apply([Edit(path="config.yaml", search="x: 0.0", replace="x: 9.9")])
    assert applied == 0 and "symbolic link" in report
    assert secret.read_text() == "x: 0.0\n"
    for path in ("config.yaml", "linked/config.yaml"):
        with pytest.raises(WorkspaceError, match="symbolic link"):
            ws.read(path)
    assert "symbolic link: refused" in ws.list_files()


def test_only_editable_files_may_be_edited(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (ws.root / "notes.txt").write_text("hello\n")
    applied, report = ws.apply([Edit(path="notes.txt", search="hello", replace="bye")])
    assert applied == 0 and "not editable" in report and "train.py, config.yaml" in report
    assert "hello" in ws.read("notes.txt")  # reading a non-editable file is fine


def test_a_non_matching_block_returns_the_nearest_lines_and_the_others_still_apply(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    applied, report = ws.apply([
        Edit(path="train.py", search="def apply_overides(cfg, overides):", replace="def f():"),
        Edit(path="config.yaml", search="noise: 0.01", replace="noise: 0.02"),
        Edit(path="train.py", search="import", replace="#"),
    ])
    assert applied == 1
    assert "def apply_overrides(cfg, overrides):" in report  # the nearest lines, numbered
    assert "occurs" in report and "times" in report  # 'import' is ambiguous
    assert [e.path for e in ws.edits] == ["config.yaml"]
    assert "noise: 0.02" in ws.file_text("config.yaml")


def test_the_smoke_test_catches_syntax_errors_and_crashes_and_passes_a_good_program(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ok, report = ws.smoke(LLM)
    assert ok and "smoke test passed" in report and "test_score" not in report
    ws.apply([Edit(path="train.py", search="def main():", replace="def main(:")])
    ok, report = ws.smoke(LLM)
    assert not ok and "train.py" in report and "syntax" in report.lower()
    ws.apply([Edit(path="train.py", search="def main(:", replace="def main():")])
    ws.set_overrides({"behaviour": "crash"})
    ok, report = ws.smoke(LLM)
    assert not ok and "exited with status" in report and "deliberate crash" in report
    with pytest.raises(WorkspaceError, match="unknown config key"):
        ws.set_overrides({"nope": 1})


def test_the_smoke_run_never_sees_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-secret-1234")
    monkeypatch.setenv("SOME_TOKEN", "sk-ant-file-secret-5678")
    ws = workspace(tmp_path, secrets=["sk-ant-file-secret-5678"])
    ws.apply([Edit(path="train.py", search="def main():",
                   replace="def main():\n    import os; print(sorted(os.environ.items())); raise SystemExit(3)")])
    ok, report = ws.smoke(LLM)
    # The environment was printed (and nothing in it says "smoke run"), without either key.
    assert not ok and "AUTOSCI_SEED" in report and "AUTOSCI_SMOKE" not in report
    assert "sk-ant-env-secret-1234" not in report and "sk-ant-file-secret-5678" not in report
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-env-secret-1234"


def test_check_edits_on_the_champion_files(tmp_path: Path) -> None:
    task = load_task(TOY)
    files = read_program(task.program_dir, task.editable)
    assert check_edits(task, files, [Edit(path="config.yaml", search="noise: 0.01", replace="noise: 0.02")]) == []
    problems = check_edits(task, files, [Edit(path="../x", search="a", replace="b"),
                                         Edit(path="config.yaml", search="noise: 0.1", replace="")])
    assert "not an editable file" in problems[0] and "noise: 0.01" in problems[1]


def test_the_policy_refuses_a_traversal_edit_and_a_symlink_escape_through_its_tools(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    outside = tmp_path / "outside.py"
    outside.write_text("print('outside')\n")
    answers: list[list[dict]] = []

    def record(reply):
        def respond(body: dict) -> dict:
            answers.append(last_results(body))
            return reply
        return respond

    server = FakeServer(Script([
        tool_use(("edit_files", {"edits": [{"path": "../../outside.py", "search": "print", "replace": "boom"}]}),
                 ("read_file", {"path": str(outside)})),
        record(tool_use(("submit", {"notes": "nothing to change"}))),
    ]))
    impl = anthropic_policy(server, task, tmp_path).implement(agent(), view, _proposal())
    assert server.count == 2 and impl.edits == []
    edit_answer, read_answer = answers[0]
    assert "'..' is refused" in edit_answer["content"]
    assert read_answer["is_error"] and "absolute paths are refused" in read_answer["content"]
    assert outside.read_text() == "print('outside')\n"


def _proposal():
    from autosci_hpc.agents.views import ProposalView

    return ProposalView(id=3, author="analyst-1", team_id=1, focus="x_axis", title="t", rationale="r",
                        overrides={"x": 0.4}, edits=[], change_signature="x=0.4", config_signature="s|x=0.4",
                        directions=["x~bin4/6"], status="claimed", outcome="", base_champion_id=1)
