"""Does the model endpoint answer from here? One cheap request (the model list), no tokens spent.

Compute nodes often have no route to the internet: a campaign whose coordinator cannot reach its
model would only find out when its first agent tries. `autosci doctor --config X` runs this probe
where the coordinator will run (submit it there with `srun`) and says what to do when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..config import LLMSection

try:  # the anthropic SDK 2.x depends on httpx2; older set-ups have httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

ANTHROPIC_DEFAULT = "https://api.anthropic.com"
ADVICE = ("if this node has no internet access, set HTTPS_PROXY (and NO_PROXY for cluster-local hosts) "
          "before launching, or serve an open model on the cluster (llm.serve.command) and point "
          "llm.base_url at it")


@dataclass
class Probe:
    ok: bool
    url: str
    line: str


def models_url(llm: LLMSection) -> str:
    if llm.backend == "anthropic":
        return (llm.base_url or ANTHROPIC_DEFAULT).rstrip("/") + "/v1/models"
    return (llm.base_url or "https://api.openai.com/v1").rstrip("/") + "/models"


def probe(llm: LLMSection, api_key: Optional[str], *, timeout_s: float = 10.0,
          http_client: Any = None) -> Probe:
    """GET the backend's model list; the reply's status decides. The key is sent, never printed."""
    url = models_url(llm)
    headers = {}
    if api_key and llm.backend == "anthropic":
        headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    elif api_key:
        headers = {"authorization": f"Bearer {api_key}"}
    client = http_client or httpx.Client(timeout=timeout_s, trust_env=True)
    try:
        response = client.get(url, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        return Probe(False, url, f"{url}: no answer within {timeout_s:g} s; {ADVICE}")
    except httpx.TransportError as exc:
        return Probe(False, url, f"{url}: cannot connect ({type(exc).__name__}); {ADVICE}")
    finally:
        if http_client is None:
            client.close()
    if response.status_code == 200:
        return Probe(True, url, f"{url}: answers (HTTP 200)")
    if response.status_code in (401, 403):
        return Probe(False, url, f"{url}: reached, but the key was refused (HTTP {response.status_code}); "
                                 "check llm.api_key_file or the backend's key variable")
    return Probe(False, url, f"{url}: reached, but it answered HTTP {response.status_code}; check llm.base_url")
