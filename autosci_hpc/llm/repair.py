"""Tool-call arguments that are almost JSON: repaired where the repair cannot change their meaning,
refused with a reason where it could.

Small open models served on a cluster often wrap the arguments in a code fence or a sentence, end
an object with a trailing comma, or write Python's True/False/None. Those are repaired. What is not
repaired: a truncated object (the missing part may have mattered), single-quoted strings, comments,
more than one object, anything that does not end up as one JSON object. The reason is returned so
the policy can answer the model with it and the attempt is recorded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

#: Larger inputs are not repaired (a repair is a few linear passes, but nothing good comes that big).
MAX_CHARS = 200_000

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)


@dataclass
class Repaired:
    value: Optional[dict[str, Any]]
    #: What was repaired (empty for valid JSON), or why it was refused when `value` is None.
    notes: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.notes)


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _outside_strings(text: str, fn: Any) -> str:
    """Apply `fn` to the parts of `text` outside JSON double-quoted strings."""
    out, i, chunk = [], 0, []
    while i < len(text):
        ch = text[i]
        if ch == '"':
            out.append(fn("".join(chunk)))
            chunk = []
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        chunk.append(ch)
        i += 1
    out.append(fn("".join(chunk)))
    return "".join(out)


def _single_object(text: str) -> Optional[str]:
    """The one balanced {...} in `text` (ignoring braces inside strings); None if zero or several."""
    spans, depth, start, i = [], 0, -1, 0
    while i < len(text):
        ch = text[i]
        if ch == '"' and depth > 0:
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
        i += 1
    if len(spans) != 1 or depth != 0:
        return None
    return text[spans[0][0]:spans[0][1]]


def repair_arguments(raw: str) -> Repaired:
    """Parse tool-call arguments, repairing only what is safe. `value` is None when refused."""
    if not isinstance(raw, str):
        return Repaired(None, ["the arguments are not text"])
    if len(raw) > MAX_CHARS:
        return Repaired(None, [f"the arguments are longer than {MAX_CHARS} characters"])
    text = raw.strip() or "{}"
    notes: list[str] = []
    try:
        value = _loads(text)
    except (ValueError, RecursionError):
        pass
    else:
        if isinstance(value, dict):
            return Repaired(value, [])
        return Repaired(None, ["the arguments must be a JSON object"])
    fence = _FENCE.match(text)
    if fence:
        text = fence.group(1).strip()
        notes.append("removed a code fence")
    if text.count("{") > text.count("}") or text.count("[") > text.count("]"):
        return Repaired(None, notes + ["the arguments look truncated (unclosed braces): not guessed"])
    found = _single_object(text)
    if found is None:
        return Repaired(None, notes + ["the arguments are not one JSON object (none, several, or unbalanced)"])
    if found != text:
        text = found
        notes.append("took the one JSON object out of the surrounding text")
    fixed = _outside_strings(text, lambda part: re.sub(r",\s*([}\]])", r"\1", part))
    if fixed != text:
        notes.append("removed trailing commas")
        text = fixed
    fixed = _outside_strings(text, lambda part: re.sub(r"\b(True|False|None)\b",
                                                       lambda m: {"True": "true", "False": "false",
                                                                  "None": "null"}[m.group(1)], part))
    if fixed != text:
        notes.append("wrote Python's True/False/None as JSON")
        text = fixed
    try:
        value = _loads(text)
    except (ValueError, RecursionError) as exc:
        return Repaired(None, notes + [f"still not valid JSON after safe repairs: {exc}"])
    if not isinstance(value, dict):
        return Repaired(None, notes + ["the arguments must be a JSON object"])
    return Repaired(value, notes)
