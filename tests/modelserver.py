"""A stand-in for a model server: an HTTP server on 127.0.0.1 that speaks the OpenAI-compatible
chat-completions API and Anthropic's Messages API, and plays a scripted model on the toy task.

It is what the tests point the product's real clients at, in-process (`ModelServer(...).start()`)
or as a process of its own (`python tests/modelserver.py --port-file F ...`), for example as the
"served model" of a campaign on the test cluster. The scripted model answers each request from what
the request offers (its tools) and says (its prompt), as a model would:

- analysts read the log once, then propose: a move of x or y towards the optimum, and one proposal
  that edits the program's code (`train.py`: y fixed at its optimum);
- critics approve unless the evidence checks found something; the convening analyst forms one team
  per focus; reviewers register no dead end;
- experimenters list the files, smoke-test, and submit.

Replies can be slowed (`delay_s`), and requests can be failed on demand (`fail` maps a request
number to an HTTP status), so tests can exercise slow models and retries. Every request body is
kept (`requests`, and one JSON line per request in `log_path`), so a test can grep what was sent.

Instead of the scripted model, a test can give a `script`: raw replies sent in order whatever the
request (bytes, status and headers exactly as given: invalid UTF-8, absurd JSON, a 429 with a
retry-after), the last one repeating once the script is spent; a reply may be a function of the
request body. A request body that is not JSON is then kept as `{"unparsable": ...}` and still answered.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, Union

#: The line of the toy program that the code-editing proposal rewrites.
CODE_ANCHOR = 'x, y = float(cfg["x"]), float(cfg["y"])'
CODE_EDIT = 'x, y = float(cfg["x"]), -0.3  # y held at its optimum (a code change)'


@dataclass
class Raw:
    """One HTTP reply: a status, headers and a body of bytes (or a JSON-serialisable value)."""

    body: Union[bytes, str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8", "surrogatepass")
        return json.dumps(self.body).encode()


#: One reply of a script: sent as it is, or computed from the request's body.
Reply = Union[Raw, Callable[[dict], Raw]]


@dataclass
class Turn:
    """One request, reduced to what the scripted model reads: API-independent."""

    api: str  # "openai" | "anthropic"
    tools: list[str]
    prompt: str  # the first user message
    text: str  # every text of the request, system included
    turn: int  # 1 for the first request of a conversation
    results: list[str]  # the newest tool results


@dataclass
class Brain:
    """The scripted model's decisions; its counters are read by tests."""

    values: dict[str, list[float]] = field(default_factory=lambda: {
        "x_axis": [0.5, 0.55, 0.65, 0.45, 0.7, 0.6, 0.4, 0.35],
        "y_axis": [-0.25, -0.35, -0.2, -0.4, -0.3, -0.15, -0.45, -0.1]})
    #: Read tools an experimenter calls before it submits (each one more model turn).
    implement_reads: int = 1
    code_edits_posted: int = 0
    discussion_posts: int = 0
    purposes: dict[str, int] = field(default_factory=dict)

    def decide(self, t: Turn) -> list[tuple[str, dict[str, Any]]]:
        names = set(t.tools)
        if "post_proposal" in names:
            return self._count("propose", self.propose(t))
        if "critique" in names:
            findings = t.prompt.split("## Findings of the evidence checks\n", 1)[-1]
            if findings.startswith("(no findings)"):
                return self._count("critique", [("critique", {"verdict": "approve",
                                                              "reasons": "a new direction; nothing argues against it"})])
            return self._count("critique", [("critique", {"verdict": "reject",
                                                          "reasons": findings.splitlines()[0][:200]})])
        if "write_team_plan" in names:
            m = re.search(r"plan at most (\d+) team", t.prompt)
            n = int(m.group(1)) if m else 2
            ids: dict[str, list[int]] = {"x_axis": [], "y_axis": []}
            for pid, focus in re.findall(r"^p(\d+) \[[^\]]*\] by \S+ \((x_axis|y_axis)", t.prompt, re.M):
                ids[focus].append(int(pid))
            teams = [{"focus": f, "hypothesis": f"moving {f[0]} towards its optimum raises the score",
                      "proposal_ids": ids[f]} for f in ("y_axis", "x_axis")][:n]  # y first: its code change
            return self._count("plan_teams", [("write_team_plan", {"teams": teams})])
        if "register_dead_ends" in names:
            return self._count("review", [("register_dead_ends", {"dead_ends": []})])
        if "submit" in names:
            if t.turn == 1:
                return self._count("implement", [("list_files", {})])
            if t.turn <= self.implement_reads:
                return self._count("implement", [("read_file", {"path": "config.yaml"})])
            return self._count("implement", [("submit", {"notes": "implemented as proposed"})])
        return [("unknown_tool", {"offered": sorted(names)})]

    def propose(self, t: Turn) -> list[tuple[str, dict[str, Any]]]:
        if t.turn == 1:
            return [("read_log", {"order": "best", "limit": 10})]
        m = re.search(r"Required focus: (\S+) ", t.prompt)
        if m:
            focus = m.group(1)
        else:
            focus = ("x_axis", "y_axis")[self.discussion_posts % 2]
            self.discussion_posts += 1
        # The code change, while the champion program does not have it yet (a try that was overtaken by
        # another promotion, and concluded stale, is proposed again on the new champion), at most 3 times.
        if focus == "y_axis" and self.code_edits_posted < 3 and CODE_ANCHOR in t.text:
            self.code_edits_posted += 1
            return [("post_proposal", {
                "title": "hold y at its optimum in train.py", "focus": focus, "overrides": {},
                "edits": [{"path": "train.py", "search": CODE_ANCHOR, "replace": CODE_EDIT}],
                "rationale": "the score is quadratic in y with its optimum at -0.3; fix it in the code",
                "expected_effect": "score up by about 0.09", "falsification": "no gain on 3 seeds"})]
        if not self.values.get(focus):
            return [("no_proposal", {"reason": "this axis is explored"})]
        key, value = focus[0], self.values[focus].pop(0)
        return [("post_proposal", {
            "title": f"{key} to {value}", "focus": focus, "overrides": {key: value},
            "rationale": f"the score is quadratic in {key}; {value} is nearer the optimum",
            "expected_effect": "score up by more than the seed noise", "falsification": "no gain on 3 seeds"})]

    def _count(self, purpose: str, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        self.purposes[purpose] = self.purposes.get(purpose, 0) + 1
        return calls


# ---- the two APIs -----------------------------------------------------------------------------

def _anthropic_turn(body: dict[str, Any]) -> Turn:
    messages = body.get("messages") or []
    first = messages[0]["content"] if messages else ""
    prompt = first if isinstance(first, str) else "".join(b.get("text", "") for b in first if isinstance(b, dict))
    system = body.get("system") or ""
    system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
    results: list[str] = []
    if messages and isinstance(messages[-1].get("content"), list):
        for block in messages[-1]["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                results.append(content if isinstance(content, str) else json.dumps(content))
    return Turn("anthropic", [t.get("name", "") for t in body.get("tools") or []], prompt,
                system_text + "\n" + prompt, sum(m.get("role") == "assistant" for m in messages) + 1, results)


def _openai_turn(body: dict[str, Any]) -> Turn:
    messages = body.get("messages") or []
    system = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    results = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        results.insert(0, str(m.get("content") or ""))
    tools = [(t.get("function") or {}).get("name", "") for t in body.get("tools") or []]
    return Turn("openai", tools, users[0] if users else "", system + "\n" + "\n".join(users),
                sum(m.get("role") == "assistant" for m in messages) + 1, results)


_ids = itertools.count(1)


def _anthropic_reply(calls: list[tuple[str, dict[str, Any]]], model: str) -> dict[str, Any]:
    return {"id": f"msg_{next(_ids):05d}", "type": "message", "role": "assistant", "model": model,
            "stop_reason": "tool_use", "stop_sequence": None,
            "content": [{"type": "tool_use", "id": f"toolu_{next(_ids):05d}", "name": n, "input": a}
                        for n, a in calls],
            "usage": {"input_tokens": 900, "output_tokens": 80, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def _openai_reply(calls: list[tuple[str, dict[str, Any]]], model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{next(_ids):05d}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": [{"id": f"call_{next(_ids):05d}", "type": "function",
                                                     "function": {"name": n, "arguments": json.dumps(a)}}
                                                    for n, a in calls]}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 80, "total_tokens": 980}}


class ModelServer:
    """The stand-in server. `start()` serves on 127.0.0.1 in a thread and returns the base URL."""

    def __init__(self, brain: Optional[Brain] = None, *, script: Optional[list[Reply]] = None,
                 delay_s: float = 0.0, fail: Optional[dict[int, int]] = None, log_path: Optional[Path] = None,
                 model: str = "stand-in", hold: Optional[Callable[[Turn], bool]] = None) -> None:
        self.brain = brain or Brain()
        #: Raw replies, in order, instead of the brain's (see the module's docstring).
        self.script = list(script) if script is not None else None
        #: The path of each request, in order.
        self.paths: list[str] = []
        self.delay_s = delay_s
        self.fail = dict(fail or {})
        self.log_path = log_path
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        #: Per conversation (keyed by its opening prompt): the times of its requests, in seconds.
        self.conversations: dict[str, list[float]] = {}
        #: The first request for which `hold(turn)` is true waits, unanswered, until `release` is set;
        #: `held` is set while it waits (a deterministic hook for "in the middle of a conversation").
        self.hold = hold
        self.held = threading.Event()
        self.release = threading.Event()
        #: Requests answered with a reply (status 200), by request number.
        self.answered: list[int] = []
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def count(self) -> int:
        return len(self.requests)

    def longest_conversation_s(self) -> float:
        """Seconds from the first to the last request of the longest conversation."""
        return max((times[-1] - times[0] for times in self.conversations.values()), default=0.0)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL (what the anthropic SDK takes; an OpenAI-compatible client adds /v1)."""
        return self.anthropic_url()

    def handle(self, path: str, raw: bytes, headers: dict[str, str]) -> Raw:
        """One request -> its reply. Thread-safe; the brain (or the script) answers one request at a time."""
        if path.rstrip("/").endswith("/models"):
            return Raw({"object": "list", "data": [{"id": self.model, "object": "model", "type": "model"}]})
        with self._lock:
            self.raw.append(raw)
            self.headers.append(headers)
            self.paths.append(path)
            number = len(self.raw)
            try:
                body = json.loads(raw)
            except ValueError:
                if self.script is None:
                    return Raw({"error": {"type": "invalid_request_error", "message": "body is not JSON"}}, 400)
                body = {"unparsable": raw[:200].decode("latin-1")}
            self.requests.append(body)
            if self.log_path is not None:
                with open(self.log_path, "a") as log:
                    log.write(json.dumps({"n": number, "path": path, "body": body}) + "\n")
            if self.script is not None:
                reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
                return reply(body) if callable(reply) else reply
            status = self.fail.get(number)
            if status:
                return Raw({"type": "error", "error": {"type": "overloaded_error", "message": "scripted failure"}},
                           status)
            if path.endswith("/chat/completions"):
                turn, reply_of = _openai_turn(body), _openai_reply
            elif path.endswith("/messages"):
                turn, reply_of = _anthropic_turn(body), _anthropic_reply
            else:
                return Raw({"error": {"message": f"no such endpoint {path}"}}, 404)
            self.conversations.setdefault(turn.prompt, []).append(time.monotonic())
            wait = self.hold is not None and not self.held.is_set() and self.hold(turn)
            if wait:
                self.held.set()
        if wait:  # outside the lock: the other agents' conversations go on
            self.release.wait()
        with self._lock:
            self.answered.append(number)
            return Raw(reply_of(self.brain.decide(turn), self.model))

    def start(self, port: int = 0) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, reply: Raw) -> None:
                out = reply.payload()
                self.send_response(reply.status)
                for key, value in {"content-type": "application/json", **reply.headers}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                try:
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):  # the client was stopped meanwhile
                    pass

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                self._send(server.handle(self.path, b"", dict(self.headers)))

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if server.delay_s:
                    time.sleep(server.delay_s)
                self._send(server.handle(self.path, raw, {k.lower(): v for k, v in self.headers.items()}))

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="model-server", daemon=True)
        self._thread.start()
        return self.openai_url()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """Serve until killed; the chosen port is written to --port-file (atomically) once it listens."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--implement-reads", type=int, default=1)
    parser.add_argument("--log", type=Path, help="append each request as a JSON line")
    args = parser.parse_args(argv)
    server = ModelServer(Brain(implement_reads=args.implement_reads), delay_s=args.delay, log_path=args.log)
    server.start(args.port)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(server.port))
        tmp.replace(args.port_file)
    print(f"stand-in model server on 127.0.0.1:{server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
