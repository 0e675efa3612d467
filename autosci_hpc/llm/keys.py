"""API keys: from a private file (recommended) or the environment, and kept out of everything we write.

The key lives only in the client object in memory: never in the database, the forum, logs or error
messages (`redact`, and the process's scrubber, which learns the key here: `scrub.register_secret`).
The key file's path is not in the stored campaign config either (`stored_config`), and trial code,
which runs sandboxed, sees neither the file nor the environment of the processes that read it.

Why a file rather than an environment variable: a process's initial environment stays readable in
`/proc/<pid>/environ` for its whole life (unsetting the variable later does not erase it), by every
process of the same user, and it is inherited by every child unless removed. A file of mode 0600
outside the campaign folder and the Python environment is read once and is out of the sandbox's view.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional

from .. import scrub
from ..config import CampaignConfig, ConfigError, LLMSection

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
        key = read_key_file(llm.api_key_file)
        scrub.register_secret(key)
        return key
    var = ENV_VARS.get(llm.backend, "")
    key = env.get(var, "").strip() if var else ""
    if key:
        scrub.register_secret(key)
        return key
    if llm.backend == "anthropic":
        raise APIKeyError(f"llm.backend=anthropic needs an API key: set {var} or llm.api_key_file "
                        "(a file of mode 0600 holding the key)")
    return None


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    """`text` without the keys, in any form the scrubber recognises (reversed, spaced, encoded)."""
    return scrub.Scrubber(secrets=[s for s in secrets if s and len(s) >= 4]).scrub(text)


def stored_config(config: CampaignConfig) -> dict:
    """The campaign config as the database keeps it: without the key file's path (the database is
    read by reports, exports and anyone the folder is shared with; the path leads to the key)."""
    data = config.model_dump(mode="json")
    if data.get("llm", {}).get("api_key_file"):
        data["llm"]["api_key_file"] = "(set; not recorded)"
    return data
