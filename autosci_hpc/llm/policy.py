"""`LLMPolicy`: every `Policy` decision as a tool-use conversation with a chat model.

One decision = one conversation. The system prompt (role instructions, then the task and the
champion program, marked for prompt caching) and a bounded picture of the state open it; the
model calls tools — reading the log, forum, dead ends and proposals, keeping notes, and for
experimenters listing, reading, editing and smoke-testing a scratch copy of the champion program —
and ends with a final tool whose input is the decision's pydantic draft.

Every tool call is validated against its input model. One that does not validate (or a final
call the policy refuses: an unknown config key, a dead end, an edit that does not apply) is
answered with the error, as a tool result, so the model can correct itself; after
`llm.max_invalid` such answers, or `llm.max_turns` replies without a decision, the policy raises
`LLMPolicyError` (a `PolicyError`) with a message the caller can record. Requests are retried on
429 / 5xx / 529 / timeouts, and every attempt is accounted through the injected recorder.

The policy never opens a database transaction; its only effects are the returned drafts, the
`llm_call` rows written by the recorder, and `agent.memory_update` (the notes the model keeps).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from pydantic import ValidationError

from ..agents.policy import (AgentInfo, CritiqueDraft, DeadEndDraft, Implementation, PolicyError, ProposalDraft,
                             TeamDraft)
from ..agents.views import ProposalView, StateView
from ..config import LLMSection, ModelPrice, price_of
from ..layout import CampaignLayout
from ..task import (Edit, PatchError, TaskSpec, apply_edits, change_signature, directions,
                    unknown_keys_reason)
from .accounting import CallRecord, MemoryRecorder, Recorder, cost_usd
from .chat import (Attempt, ChatClient, ChatRequest, ChatResponse, LLMError, Message, SystemBlock, Text,
                   ToolCall, ToolResult, ToolSpec, call_with_retries, clean_text, clip_marked)
from .context import (CHARS_PER_TOKEN, MEMORY_CHARS, clip, compact, dead_end_line, listing, post_line,
                      proposal_line, render_state, task_text, trial_line)
from ..execution.executors import TrialExecutor
from ..execution.sandbox import SandboxSettings
from ..scrub import Scrubber
from .keys import redact
from .tools import (DeadEnds, Done, EditFiles, ListFiles, NoProposal, ReadDeadEnds, ReadFile, ReadForum, ReadLog,
                    ReadProposals, TeamPlan, SetOverrides, SmokeTest, Submit, Tool, ToolRefused, UpdateMemory,
                    format_validation)
from .workspace import Workspace, WorkspaceError, check_edits, read_program


class LLMPolicyError(LLMError):
    """A decision the model did not deliver: invalid tool calls, too many turns, a failed API."""


class LLMBudgetExceeded(LLMPolicyError):
    """The next request would take the committed LLM cost past `budget.llm_dollars`."""


COMMON_RULES = """You are one agent of a decentralized team improving a program against a metric. The
shared state (champion, experiment log, forum, dead-end registry) is summarised in the user message;
read tools page through more of it. Act only through the tools: finish your task with exactly one
call of its final tool. If a tool answers with an error, correct the call and try again. The
held-out test metric is never shown to anyone; judge only by the validation metric. Keep your
notes (update_memory) short: what you learned, what to try or avoid next."""

ROLE_RULES = {
    "propose": """You are an ANALYST posting one proposal: a change to the champion program made of config
overrides (dotted keys of config.yaml) and/or code edits (SEARCH/REPLACE blocks on the editable files,
the SEARCH text copied exactly from the champion program below). Give a rationale grounded in the log,
the effect you predict and what result would falsify it. Do not repeat a tried configuration or move
into a dead end. Final tools: post_proposal, or no_proposal when you have nothing worth trying.""",
    "critique": """You are an ANALYST critiquing a peer's proposal before any compute is spent. Approve only
if the log and the dead-end registry do not argue against it and it is not a duplicate; reject with
specific reasons otherwise. The evidence checks' findings are given; take them seriously.
Final tool: critique.""",
    "plan_teams": """You are the ANALYST who plans the teams: choose the hypotheses (each one focus — a
hypothesis family — and a one-paragraph hypothesis) that teams will form around, best supported
first, from the proposals that survived discussion. Final tool: write_team_plan.""",
    "review": """You are an ANALYST reviewing outcomes: register as dead ends the directions that the log
shows do not help, so that nobody proposes them again. Only directions listed in the evidence can be
registered; register none if the evidence is thin. Final tool: register_dead_ends.""",
    "implement": """You are an EXPERIMENTER implementing a claimed proposal on a private scratch copy of the
champion program. Its overrides are already set and its code edits already applied (see the report).
Check the result (list_files, read_file), fix what is needed with edit_files (SEARCH/REPLACE blocks;
SEARCH must be copied exactly from the current file), set_overrides for config changes, run
smoke_test (a few seconds with tiny settings: it catches crashes before any GPU is spent), then call
submit. Keep to the proposal's idea; do not touch the evaluation or the held-out data.""",
}

FINAL_NAMES = {"propose": "post_proposal or no_proposal", "critique": "critique", "plan_teams": "write_team_plan",
               "review": "register_dead_ends", "implement": "submit"}


class LLMPolicy:
    """A `Policy` backed by a chat model with tools (Anthropic or an OpenAI-compatible server)."""

    def __init__(self, client: ChatClient, *, task: TaskSpec, llm: Optional[LLMSection] = None,
                 recorder: Optional[Recorder] = None, campaign_folder: Optional[Path] = None,
                 budget_usd: Optional[float] = None, secrets: Iterable[Optional[str]] = (),
                 sleep: Callable[[float], None] = time.sleep,
                 heldout: Callable[[], tuple[list[float], list[float]]] = lambda: ([], []),
                 sandbox: Optional[SandboxSettings] = None,
                 smoke_executor: Optional[TrialExecutor] = None) -> None:
        self.client = client
        #: What the experimenters' smoke runs go through (`execution.smoke`).
        self.smoke_executor = smoke_executor
        self.task = task
        self.llm = llm or LLMSection(backend="anthropic", model=client.model)
        self.recorder: Recorder = recorder or MemoryRecorder()
        self.campaign_folder = Path(campaign_folder).absolute() if campaign_folder else None
        self.budget_usd = budget_usd
        self.secrets = [s for s in secrets if s]
        self.sleep = sleep
        #: The successful attempt whose `llm_call` row waits for its reply to be judged (`_settle`).
        self._pending: Optional[CallRecord] = None
        #: (held-out values, validation values) recorded so far: no request carries a held-out value.
        self.heldout = heldout
        self.sandbox = sandbox
        price = price_of(self.llm.prices, client.model)
        if price is None:
            raise LLMPolicyError(f"no price for model '{client.model}' in llm.prices")
        self.price: ModelPrice = price
        self.name = f"{client.name}:{client.model}"

    # ---- the Policy interface ----------------------------------------------------------------------

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        groups = self.task.groups()
        if focus:
            where = f"Required focus: {focus} (the post_proposal focus must be exactly '{focus}')."
        else:
            where = ("Any focus. Name the hypothesis family your change belongs to as its focus; the task's "
                     f"families are: {', '.join(groups) or '(none declared)'}.")
        mine = [str(s) for s in agent.memory.get("proposed", [])][-20:]
        ask = (f"# Your task: post one proposal\n{where}\n"
               + ("Your earlier proposals (change signatures; do not repeat them):\n"
                  + "\n".join(f"- {s}" for s in mine) if mine else "You have not proposed anything yet.")
               + "\nFinish with post_proposal (or no_proposal).")

        def post(draft: ProposalDraft) -> Done:
            self._check_proposal(draft, focus, view, agent)
            return Done(self._clip_texts(draft))

        tools = self._read_tools(view, agent) + [
            Tool("post_proposal", "Post your proposal to the forum (final).", ProposalDraft, post, final=True),
            Tool("no_proposal", "Post nothing this time, saying why (final).", NoProposal,
                 lambda _: Done(None), final=True),
        ]
        return self._converse(agent, "propose", view, ask, tools, program=True)

    def critique(self, agent: AgentInfo, view: StateView, proposal: ProposalView,
                 findings: list[str]) -> CritiqueDraft:
        ask = ("# Your task: critique this proposal\n" + self._proposal_detail(proposal)
               + "\n\n## Findings of the evidence checks\n"
               + ("\n".join(f"- {clip(f, 400)}" for f in findings[:20]) if findings else "(no findings)")
               + "\n\nFinish with critique (verdict approve or reject, with your reasons).")
        tools = self._read_tools(view, agent) + [
            Tool("critique", "Your verdict on the proposal, with reasons (final).", CritiqueDraft,
                 lambda v: Done(self._clip_texts(v)), final=True)]
        return self._converse(agent, "critique", view, ask, tools, program=True)

    def plan_teams(self, agent: AgentInfo, view: StateView, approved: list[ProposalView],
                   n_teams: int) -> list[TeamDraft]:
        n_teams = max(1, n_teams)
        groups = self.task.groups()
        allowed = list(dict.fromkeys(groups + [p.focus for p in approved]))
        ask = (f"# Your task: plan at most {n_teams} team(s)\nEach team explores one focus. Allowed focuses: "
               f"{', '.join(allowed) or '(any)'}.\n## Proposals that survived discussion\n"
               + listing([proposal_line(p) for p in approved], 40)
               + "\n\nFinish with write_team_plan: the teams, best-supported hypothesis first, each with the ids of "
                 "the approved proposals that support it.")
        approved_ids = {p.id for p in approved}

        def accept_plan(value: TeamPlan) -> Done:
            problems = []
            if len(value.teams) > n_teams:
                problems.append(f"at most {n_teams} team(s), got {len(value.teams)}")
            focuses = [t.focus for t in value.teams]
            if len(set(focuses)) != len(focuses):
                problems.append("two teams share a focus")
            if allowed:
                problems += [f"focus '{f}' is not one of {allowed}" for f in focuses if f not in allowed]
            for t in value.teams:
                stray = sorted(set(t.proposal_ids) - approved_ids)
                if stray:
                    problems.append(f"team '{t.focus}': proposals {stray} are not among the approved ones")
            if problems:
                raise ToolRefused("; ".join(problems))
            return Done([self._clip_texts(t) for t in value.teams])

        tools = self._read_tools(view, agent) + [
            Tool("write_team_plan", "The teams to form, best-supported first (final).", TeamPlan, accept_plan, final=True)]
        return self._converse(agent, "plan_teams", view, ask, tools)

    def review(self, agent: AgentInfo, view: StateView, evidence: dict[str, list[int]]) -> list[DeadEndDraft]:
        known = {d.signature for d in view.dead_ends}
        open_evidence = {k: v for k, v in evidence.items() if k not in known}
        if not open_evidence:
            return []  # nothing to decide: no call, no cost
        ranked = sorted(open_evidence.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ask = ("# Your task: register dead ends\n## Evidence: directions and their non-improving trials\n"
               + listing([f"{sig}: trials {', '.join(map(str, ids[:12]))}" for sig, ids in ranked], 40)
               + "\n\nFinish with register_dead_ends (an empty list registers nothing).")

        def register(value: DeadEnds) -> Done:
            problems = []
            for d in value.dead_ends:
                if d.signature not in open_evidence:
                    problems.append(f"'{d.signature}' is not a direction listed in the evidence")
                elif set(d.evidence_trial_ids) - set(open_evidence[d.signature]):
                    stray = sorted(set(d.evidence_trial_ids) - set(open_evidence[d.signature]))
                    problems.append(f"'{d.signature}': trials {stray} are not in its evidence")
            if problems:
                raise ToolRefused("; ".join(problems))
            return Done([self._clip_texts(d) for d in value.dead_ends])

        tools = self._read_tools(view, agent) + [
            Tool("register_dead_ends", "Register directions as dead ends (final).", DeadEnds, register, final=True)]
        return self._converse(agent, "review", view, ask, tools)

    def implement(self, agent: AgentInfo, view: StateView, proposal: ProposalView) -> Implementation:
        if view.champion is None:
            raise LLMPolicyError(f"{agent.name}: implement: there is no champion to build on")
        source = self._snapshot_dir(view)
        parent = (CampaignLayout(self.campaign_folder).scratch if self.campaign_folder
                  else Path(tempfile.gettempdir()))
        try:
            ws = Workspace.create(self.task, source, parent, name=agent.name,
                                  base_overrides=view.champion.overrides, secrets=self.secrets,
                                  heldout=self.heldout()[0], sandbox=self.sandbox,
                                  executor=self.smoke_executor)
        except (OSError, WorkspaceError) as exc:
            raise LLMPolicyError(f"{agent.name}: implement: cannot prepare the scratch workspace: {exc}") from None
        try:
            return self._implement(agent, view, proposal, ws)
        finally:
            ws.close()

    def in_flight_estimate(self) -> float:
        """An upper bound, in dollars, of one more request (for the coordinator's budget stop)."""
        prompt = self.llm.context_tokens + self.llm.program_tokens + 4000
        return (prompt * self.price.input + self.llm.max_tokens * self.price.output) / 1e6

    # ---- experimenter ----------------------------------------------------------------------------------

    def _implement(self, agent: AgentInfo, view: StateView, proposal: ProposalView, ws: Workspace) -> Implementation:
        report = []
        if proposal.overrides:
            try:
                ws.set_overrides(dict(proposal.overrides))
                report.append(f"overrides set: {compact(proposal.overrides, 600)}")
            except WorkspaceError as exc:
                report.append(f"the proposal's overrides were NOT set: {exc}")
        if proposal.edits:
            try:
                edits = [Edit.model_validate(e) for e in proposal.edits]
            except ValidationError as exc:
                report.append(f"the proposal's edits are malformed: {format_validation(exc)}")
            else:
                _, text = ws.apply(edits)
                report.append("the proposal's code edits:\n" + text)
        if not report:
            report.append("the proposal changes nothing yet")
        data_dir = (str(CampaignLayout(self.campaign_folder).data)
                    if self.campaign_folder and self.task.prepare else "")
        ask = ("# Your task: implement this proposal\n" + self._proposal_detail(proposal)
               + "\n\n## Scratch workspace (a copy of the champion program)\n" + "\n".join(report)
               + f"\nFiles:\n{ws.list_files()}\n\nFinish with submit.")

        def edit(value: EditFiles) -> str:
            applied, text = ws.apply(value.edits)
            return f"{applied} of {len(value.edits)} block(s) applied\n{text}"

        def overrides(value: SetOverrides) -> str:
            try:
                return ws.set_overrides(value.overrides)
            except WorkspaceError as exc:
                raise ToolRefused(str(exc)) from None

        def smoke(_: SmokeTest) -> str:
            return ws.smoke(self.llm, data_dir)[1]

        def submit(value: Submit) -> Done:
            if ws.edits and not ws.smoke_passed:
                ok, text = ws.smoke(self.llm, data_dir)
                if not ok:
                    raise ToolRefused("not submitted: the smoke test of the edited program fails; fix it first.\n"
                                      + text)
            try:  # the edits, replayed on the champion snapshot, as the launch will do
                apply_edits(self.task, _program_bytes(self._snapshot_dir(view)), ws.edits)
            except PatchError as exc:
                raise ToolRefused(f"not submitted: the edits do not replay on the champion: {exc}") from None
            return Done(Implementation(overrides=dict(ws.overrides), edits=list(ws.edits),
                                       notes=clip_marked(value.notes, min(2000, self.llm.text_chars))))

        def guard(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def run(value: Any) -> Any:
                try:
                    return fn(value)
                except WorkspaceError as exc:
                    raise ToolRefused(str(exc)) from None
                except (OSError, ValueError) as exc:  # a path the filesystem refuses (too long, ...)
                    why = f"{type(exc).__name__}: {clean_text(str(exc))[:200]}"
                    raise ToolRefused(f"cannot do that: {why}") from None
            return run

        tools = [
            Tool("list_files", "List the files of the workspace program.", ListFiles, lambda _: ws.list_files()),
            Tool("read_file", "Read a file of the workspace, with line numbers.", ReadFile,
                 guard(lambda v: ws.read(v.path, v.start_line, v.max_lines))),
            Tool("edit_files", "Apply SEARCH/REPLACE blocks to editable files (several files allowed). A block "
                 "that does not match is answered with the nearest lines of the file.", EditFiles, guard(edit)),
            Tool("set_overrides", "Set config overrides on top of the champion's (null removes one).", SetOverrides,
                 overrides),
            Tool("smoke_test", "Run the edited program for a few seconds with tiny settings (and check syntax).",
                 SmokeTest, smoke),
            self._read_tools(view, agent)[0],  # read_log
            self._memory_tool(agent),
            Tool("submit", "Submit the workspace's edits and overrides as the implementation (final).", Submit,
                 submit, final=True),
        ]
        return self._converse(agent, "implement", view, ask, tools, program=True)

    def _snapshot_dir(self, view: StateView) -> Path:
        assert view.champion is not None
        if view.champion.snapshot_dir:
            return Path(view.champion.snapshot_dir)
        if self.campaign_folder is None:
            raise LLMPolicyError("the champion's snapshot folder is unknown (no campaign folder given)")
        return CampaignLayout(self.campaign_folder).snapshot(view.champion.snapshot_id)

    # ---- analysts' checks --------------------------------------------------------------------------------

    def _check_proposal(self, draft: ProposalDraft, focus: Optional[str], view: StateView, agent: AgentInfo) -> None:
        problems = []
        if focus and draft.focus != focus:
            problems.append(f"focus must be '{focus}', got '{draft.focus}'")
        if not draft.focus.strip():
            problems.append("focus is empty")
        known = view.task.base_config
        unknown = unknown_keys_reason(known, draft.overrides)
        if unknown:
            problems.append(unknown)
        current = {**known, **(view.champion.overrides if view.champion else {})}
        if not draft.edits and all(current.get(k) == v for k, v in draft.overrides.items()):
            problems.append("the change is empty: every override equals the champion's value and there is no edit")
        if draft.edits and view.champion is not None:
            try:
                files = read_program(self._snapshot_dir(view), self.task.editable)
            except LLMPolicyError:
                files = {}
            if files:
                problems += check_edits(self.task, files, draft.edits)
        signature = change_signature(draft.overrides, draft.edits)
        if signature in agent.memory.get("proposed", []):
            problems.append(f"you already proposed exactly this change ({signature})")
        dead = {d.signature for d in view.dead_ends}
        hit = sorted(set(directions(self.task, draft.overrides, draft.edits)) & dead)
        if hit:
            problems.append(f"it moves into registered dead end(s) {', '.join(hit)}: proposals there are refused")
        if problems:
            raise ToolRefused("proposal refused:\n- " + "\n- ".join(problems))

    # ---- shared tools --------------------------------------------------------------------------------------

    def _memory_tool(self, agent: AgentInfo) -> Tool:
        def update(value: UpdateMemory) -> str:
            agent.memory_update["notes"] = value.notes[:MEMORY_CHARS]
            return "notes saved"
        return Tool("update_memory", "Replace your notes (kept across your steps).", UpdateMemory, update)

    def _read_tools(self, view: StateView, agent: AgentInfo) -> list[Tool]:
        def read_log(v: ReadLog) -> str:
            pool = {t.id: t for t in list(view.trials) + list(view.best_trials)}.values()
            rows = [t for t in pool
                    if (v.status is None or t.status == v.status) and (v.team_id is None or t.team_id == v.team_id)
                    and (v.proposal_id is None or t.proposal_id == v.proposal_id)]
            if v.order == "best":
                rows = sorted([t for t in rows if t.metric is not None],
                              key=lambda t: (t.metric or 0.0) * (1 if view.task.direction == "minimize" else -1))
            else:
                rows = sorted(rows, key=lambda t: -t.id)
            return listing([trial_line(t) for t in rows[v.offset:]], v.limit)

        def read_forum(v: ReadForum) -> str:
            rows = [p for p in sorted(view.forum, key=lambda p: -p.id)
                    if (v.kind is None or p.kind == v.kind) and (v.team_id is None or p.team_id == v.team_id)]
            return listing([post_line(p, 500) for p in rows], v.limit)

        def read_dead_ends(v: ReadDeadEnds) -> str:
            rows = [d for d in view.dead_ends if v.team_id is None or d.team_id == v.team_id]
            return listing([dead_end_line(d) for d in rows], v.limit)

        def read_proposals(v: ReadProposals) -> str:
            if v.proposal_id is not None:
                found = next((p for p in view.proposals if p.id == v.proposal_id), None)
                if found is None:
                    raise ToolRefused(f"no proposal p{v.proposal_id} in your view")
                return self._proposal_detail(found)
            rows = [p for p in sorted(view.proposals, key=lambda p: -p.id)
                    if (v.status is None or p.status == v.status) and (v.focus is None or p.focus == v.focus)
                    and (v.team_id is None or p.team_id == v.team_id)]
            return listing([proposal_line(p) for p in rows], v.limit)

        return [
            Tool("read_log", "Trials of the experiment log, filtered (recent first, or best first).", ReadLog,
                 read_log),
            Tool("read_forum", "Recent forum posts, filtered by kind or team.", ReadForum, read_forum),
            Tool("read_dead_ends", "The dead-end registry.", ReadDeadEnds, read_dead_ends),
            Tool("read_proposals", "Proposals, filtered; or one in full with proposal_id.", ReadProposals,
                 read_proposals),
            self._memory_tool(agent),
        ]

    def _proposal_detail(self, p: ProposalView) -> str:
        edits = "\n".join(f"--- edit {i + 1}: {e.get('path')}\nSEARCH:\n{clip(str(e.get('search', '')), 1200)}\n"
                          f"REPLACE:\n{clip(str(e.get('replace', '')), 1200)}" for i, e in enumerate(p.edits[:8]))
        return clip(f"## Proposal p{p.id} by {p.author} (focus {p.focus}, status {p.status})\n"
                    f"title: {p.title}\noverrides: {compact(p.overrides, 800)}\n"
                    f"directions: {', '.join(p.directions) or '—'}\nrationale: {clip(p.rationale, 1500)}"
                    + (f"\ncode edits:\n{edits}" if edits else ""), 12000)

    # ---- prompts ---------------------------------------------------------------------------------------------

    def _system(self, purpose: str, view: StateView, program: bool) -> list[SystemBlock]:
        rules = SystemBlock(COMMON_RULES + "\n\n" + ROLE_RULES[purpose])
        stable = task_text(view.task)
        if program and view.champion is not None:
            stable += "\n\n" + self._program_text(view)
        return [rules, SystemBlock(stable, cache=True)]

    def _program_text(self, view: StateView) -> str:
        try:
            files = read_program(self._snapshot_dir(view), self.task.editable)
        except LLMPolicyError:
            return "# The champion program\n(unavailable)"
        if not files:
            return "# The champion program\n(unavailable)"
        per_file = self.llm.program_tokens * CHARS_PER_TOKEN // len(files)
        parts = ["# The champion program (editable files)"]
        for name, text in files.items():
            cut = ("" if len(text) <= per_file
                   else f"\n... ({len(text) - per_file} characters cut; read_file shows them)")
            parts.append(f"=== {name} ===\n{text[:per_file]}{cut}")
        return "\n\n".join(parts)

    # ---- the conversation ------------------------------------------------------------------------------------

    def _converse(self, agent: AgentInfo, purpose: str, view: StateView, ask: str, tools: Sequence[Tool],
                  program: bool = False) -> Any:
        by_name = {t.name: t for t in tools}
        specs = [ToolSpec.from_model(t.name, t.description, t.model) for t in tools]
        system = self._system(purpose, view, program)
        prompt = render_state(view, agent, self.llm.context_tokens) + "\n\n" + clip(ask, 16000)
        messages = [Message("user", [Text(prompt)])]
        invalid = 0
        last_error = ""
        for turn in range(self.llm.max_turns):
            request = ChatRequest(system=system, messages=messages, tools=specs, max_tokens=self.llm.max_tokens)
            response = self._request(agent, purpose, request)
            problems: list[str] = []
            try:
                response = bound_reply(response, self.llm.reply_chars)
                messages.append(response.message)
                if not response.tool_calls:
                    invalid += 1
                    last_error = "the reply called no tool"
                    problems.append(last_error)
                    nudge = f"Call a tool; finish with {FINAL_NAMES[purpose]}."
                    messages.append(Message("user", [Text(nudge)]))
                    self._give_up_if(invalid, agent, purpose, last_error)
                    continue
                results: list[Any] = []
                for call in response.tool_calls:
                    outcome, error, counts = self._run_tool(by_name, call)
                    if isinstance(outcome, Done):
                        return outcome.value
                    if counts:
                        invalid += 1
                        last_error = f"{call.name}: {error}"
                        if _malformed(by_name, call, error):  # a refusal of a well-formed call is no error
                            problems.append(clip(last_error, 200))
                    content = clip_marked(redact(error or str(outcome), self.secrets),
                                          self.llm.tool_result_chars)
                    results.append(ToolResult(call.id, content, is_error=bool(error)))
            finally:
                self._settle(problems)
            if turn == self.llm.max_turns - 2:
                results.append(Text(f"You have one reply left: finish now with {FINAL_NAMES[purpose]}."))
            messages.append(Message("user", results))
            self._give_up_if(invalid, agent, purpose, last_error)
        raise LLMPolicyError(f"{agent.name}: {purpose}: no decision after {self.llm.max_turns} model replies"
                             + (f"; last error: {clip(last_error, 300)}" if last_error else ""))

    def _give_up_if(self, invalid: int, agent: AgentInfo, purpose: str, last_error: str) -> None:
        if invalid >= self.llm.max_invalid:
            raise LLMPolicyError(redact(f"{agent.name}: {purpose}: {invalid} tool calls were invalid or refused; "
                                        f"last error: {clip(last_error, 400)}", self.secrets))

    def _clip_texts(self, draft: Any) -> Any:
        """A copy of a final tool's draft with its free texts cut to `llm.text_chars` (a title to
        `llm.title_chars`), each cut marked: a model cannot store megabytes in the forum or the log."""
        update = {}
        for name in ("title", "rationale", "expected_effect", "falsification", "reasons", "hypothesis",
                     "description", "reason", "notes"):
            value = getattr(draft, name, None)
            if isinstance(value, str):
                limit = self.llm.title_chars if name == "title" else self.llm.text_chars
                update[name] = clip_marked(value, limit)
        return draft.model_copy(update=update)

    @staticmethod
    def _run_tool(by_name: dict[str, Tool], call: ToolCall) -> tuple[Any, str, bool]:
        """(outcome, error, counts as invalid). Whatever a tool raises, other than the decision's own
        errors, is answered to the model as an error (a hostile argument never crashes the agent)."""
        tool = by_name.get(call.name)
        if tool is None:
            return None, f"unknown tool '{call.name}'; the tools are: {', '.join(by_name)}", True
        if call.parse_error:
            return None, f"invalid input: {call.parse_error}", True
        try:
            value = tool.model.model_validate(call.input)
        except ValidationError as exc:
            return None, f"invalid input for {tool.name}:\n{format_validation(exc)}", True
        try:
            outcome = tool.run(value)
        except ToolRefused as exc:
            return None, str(exc), tool.final
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return None, f"{tool.name} failed: {type(exc).__name__}: {clean_text(str(exc))[:300]}", True
        return outcome, "", False

    def _request(self, agent: AgentInfo, purpose: str, request: ChatRequest) -> Any:
        # The last gate before the model: whatever the prompt quotes (log tails, posts, notes, tool
        # results, the model's own earlier calls) goes out without held-out values or keys.
        heldout, public = self.heldout()
        request = scrub_request(request, Scrubber(heldout, self.secrets, public))
        if self.budget_usd is not None:
            size = _request_chars(request)
            estimate = (size / CHARS_PER_TOKEN * self.price.input
                        + request.max_tokens * self.price.output) / 1e6
            spent = self.recorder.spent()
            if spent + estimate >= self.budget_usd:
                raise LLMBudgetExceeded(f"{agent.name}: {purpose}: the LLM budget of ${self.budget_usd:g} is spent "
                                        f"(committed ${spent:.4f} + this request up to ${estimate:.4f})")

        def account(attempt: Attempt) -> None:
            record = CallRecord(agent_id=agent.id, purpose=purpose, model=self.client.model,
                                latency_s=attempt.latency_s, error=redact(attempt.error, self.secrets))
            if attempt.response is not None:
                usage = attempt.response.usage
                if usage.input_unknown:  # never free: charge the request's own estimate
                    usage.input_tokens = int(_request_chars(request) / CHARS_PER_TOKEN)
                if usage.output_unknown:
                    usage.output_tokens = request.max_tokens
                usage.problems += _implausible(usage, request)
                record.tokens_in, record.tokens_out = usage.prompt_tokens, usage.output_tokens
                record.tokens_cached = usage.cache_read_tokens
                record.tokens_cache_write = usage.cache_write_tokens
                record.cost_usd = max(0.0, cost_usd(usage, self.price))
                if usage.problems:
                    record.error = "usage: " + "; ".join(usage.problems)
                # Recorded once the reply is judged (`_settle`): an unusable reply is a failed attempt.
                self._pending = record
                return
            self.recorder.record(record)

        self._settle([])
        try:
            return call_with_retries(self.client, request, max_retries=self.llm.max_retries,
                                     base_s=self.llm.retry_base_s, max_s=self.llm.retry_max_s, on_attempt=account,
                                     sleep=self.sleep, retry_after_max_s=self.llm.retry_after_max_s)
        except LLMError as exc:
            raise LLMPolicyError(redact(f"{agent.name}: {purpose}: {exc}", self.secrets)) from None

    def _settle(self, problems: list[str]) -> None:
        """Record the pending successful attempt, its error naming what was wrong with the reply (no
        tool called, a tool call broken: unknown, unreadable, invalid) so that the error counters count
        the attempts that got no usable reply."""
        record, self._pending = self._pending, None
        if record is None:
            return
        if problems:
            record.error = "; ".join(([record.error] if record.error else []) + ["reply: " + problems[0]])
        record.error = redact(clip(record.error, 500), self.secrets)
        self.recorder.record(record)


def _implausible(usage: Any, request: ChatRequest) -> list[str]:
    """Counts a server may send but no model produces: more output than the request allowed, or a
    prompt far larger than the request. Charged as reported (spend never shrinks), but flagged."""
    problems = []
    if usage.output_tokens > 2 * request.max_tokens:
        problems.append(f"output_tokens {usage.output_tokens} exceed the {request.max_tokens} asked for")
    estimate = _request_chars(request) / CHARS_PER_TOKEN
    if usage.prompt_tokens > 50 * estimate + 10_000:
        problems.append(f"prompt tokens {usage.prompt_tokens} for a prompt of about {estimate:.0f}")
    return problems


def _malformed(by_name: dict[str, Tool], call: ToolCall, error: str) -> bool:
    """Whether a call the policy answered with `error` was broken (unknown tool, unreadable or invalid
    arguments, a tool that failed on them), rather than well-formed and refused on its merits."""
    return (call.name not in by_name or bool(call.parse_error) or error.startswith("invalid input")
            or error.startswith(f"{call.name} failed: "))


def bound_reply(response: ChatResponse, max_chars: int, max_calls: int = 16) -> ChatResponse:
    """The reply as the conversation keeps it: text cut to `max_chars` (marked), at most `max_calls`
    tool calls, and a call whose arguments exceed `max_chars` kept empty, with the size as its error."""
    parts: list[Any] = []
    calls: list[ToolCall] = []
    for part in response.message.parts:
        if isinstance(part, Text):
            parts.append(Text(clip_marked(part.text, max_chars)))
        elif isinstance(part, ToolCall):
            if len(calls) >= max_calls:
                continue
            size = len(part.raw_arguments) if part.raw_arguments is not None else len(json.dumps(part.input))
            if size > max_chars:
                part = ToolCall(id=part.id, name=part.name, input={},
                                raw_arguments=None if part.raw_arguments is None
                                else clip_marked(part.raw_arguments, min(max_chars, 2000)),
                                parse_error=f"the arguments are {size} characters; at most {max_chars}")
            calls.append(part)
            parts.append(part)
        else:
            parts.append(part)
    response.text = clip_marked(response.text, max_chars)
    response.tool_calls = calls
    response.message = Message(response.message.role, parts)
    return response


def _request_chars(request: ChatRequest) -> int:
    return (sum(len(b.text) for b in request.system)
            + len(json.dumps([t.input_schema for t in request.tools]))
            + sum(_message_chars(m) for m in request.messages))


def scrub_request(request: ChatRequest, scrubber: Scrubber) -> ChatRequest:
    """A copy of `request` with every text the model will read scrubbed."""
    def part(p: Any) -> Any:
        if isinstance(p, Text):
            return Text(scrubber.scrub(p.text))
        if isinstance(p, ToolResult):
            return ToolResult(p.call_id, scrubber.scrub(p.content), p.is_error)
        if isinstance(p, ToolCall):
            return ToolCall(p.id, p.name, scrubber.scrub_value(p.input),
                            None if p.raw_arguments is None else scrubber.scrub(p.raw_arguments),
                            scrubber.scrub(p.parse_error))
        return p

    return ChatRequest(system=[SystemBlock(scrubber.scrub(b.text), b.cache) for b in request.system],
                       messages=[Message(m.role, [part(p) for p in m.parts]) for m in request.messages],
                       tools=request.tools, max_tokens=request.max_tokens, require_tool=request.require_tool)


def _message_chars(message: Message) -> int:
    total = 0
    for part in message.parts:
        if isinstance(part, Text):
            total += len(part.text)
        elif isinstance(part, ToolResult):
            total += len(part.content)
        elif isinstance(part, ToolCall):
            total += len(json.dumps(part.input))
    return total


def _program_bytes(folder: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and "__pycache__" not in rel:
            files[rel] = path.read_bytes()
    return files


__all__ = ["LLMPolicy", "LLMPolicyError", "LLMBudgetExceeded", "PolicyError"]
