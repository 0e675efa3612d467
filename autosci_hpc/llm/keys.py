"""API keys: from the environment or a private file, and kept out of everything we write.

The key lives only in the client object in memory: never in the config (which holds the file's
path), the database, the forum, logs or error messages (`redact`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional

from ..config import ConfigError, LLMSection

ENV_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


class APIKeyError(ConfigError):
    """A missing or unsafe API key (a `ConfigError`: the CLI prints it as one line)."""


def read_key_file(path: str) -> str:
    file = Path(path).expanduser()
    try:
        info = file.stat()
    except OSError as exc:
        raise APIKeyError(f"llm.api_key_file: cannot read {file}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise APIKeyError(f"llm.api_key_file: {file} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise APIKeyError(f"llm.api_key_file: {file} is readable by group or others (mode {mode:04o}); "
                        f"run `chmod 600 {file}`")
    try:
        key = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise APIKeyError(f"llm.api_key_file: cannot read {file}: {reason}") from None
    if not key:
        raise APIKeyError(f"llm.api_key_file: {file} is empty")
    return key


def resolve_api_key(llm: LLMSection, env: Optional[dict[str, str]] = None) -> Optional[str]:
    """The key for `llm.backend`: the file named in `llm.api_key_file`, else the environment.

    Anthropic needs one. An OpenAI-compatible server on the cluster often does not: None then.
    """
    env = dict(os.environ) if env is None else env
    if llm.api_key_file:
        return read_key_file(llm.api_key_file)
    var = ENV_VARS.get(llm.backend, "")
    key = env.get(var, "").strip() if var else ""
    if key:
        return key
    if llm.backend == "anthropic":
        raise APIKeyError(f"llm.backend=anthropic needs an API key: set {var} or llm.api_key_file "
                        "(a file of mode 0600 holding the key)")
    return None


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text
