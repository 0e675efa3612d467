"""One scrubber for every text that can reach a prompt or a report.

Log tails, smoke-run output, failure and forum posts, notes, tool results, and what a model writes
(titles, rationales) all pass through `Scrubber.scrub` where they are stored or sent. It removes:

- the held-out metric's values known so far, in any formatting a program or a model would use:
  rounded or truncated to the printed precision (at least two significant digits), scientific
  notation (`5.5e-01`, `5.50E-1`), and percent (`55.0%`, `55 %`); the sign is ignored;
- the API key in any form it can recognise: exact, reversed, with separators or whitespace between
  its characters (`s k - a n t ...`, split across lines), in any letter case, base64 or hex encoded,
  and any run of `FRAGMENT` consecutive characters of those (a key cut in pieces still leaks a piece).

The scrubber knows held-out values from the caller (`heldout_values(session)` reads them from the
database where the text is stored), and keys from the process registry (`register_secret`, filled
where a key is resolved) plus any it is given. It never raises: a text it cannot parse is returned
with what it could remove removed.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
import re
import threading
from typing import Any, Iterable, Optional

HELDOUT_MARK = "[held-out value removed]"
SECRET_MARK = "[redacted]"
#: Consecutive characters of a key (separators not counted) that make a leak.
FRAGMENT = 12
#: Keys shorter than this (alphanumerics) are only removed as exact strings.
MIN_SECRET = 8
#: A printed number must carry this many significant digits to count as a held-out value.
MIN_SIGNIFICANT = 2

_registry: set[str] = set()
_lock = threading.Lock()

NUMBER = re.compile(
    r"(?<![\w.])"  # not the tail of a word or of another number
    r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)"  # mantissa (a decimal comma too)
    r"(?:\s*(?:[eE]|[x×]\s*10\s*\^?)\s*[-+−]?\s*\d+)?"  # exponent: e-01, E+1, x 10^-1
    r"(?:\s*%)?"  # percent
    r"(?![\w])")


def register_secret(secret: Optional[str]) -> None:
    """Remember a key for every scrubber of this process (called where a key is resolved)."""
    if secret and secret.strip():
        with _lock:
            _registry.add(secret.strip())


def registered_secrets() -> list[str]:
    with _lock:
        return sorted(_registry)


# ---- numbers -------------------------------------------------------------------------------------------


def _parse(token: str) -> Optional[tuple[float, int]]:
    """(value, decimals of the printed mantissa scaled by its exponent) of a printed number, or None."""
    text = token.strip().replace("−", "-").replace("×", "x")
    percent = text.endswith("%")
    text = text.rstrip("%").strip()
    exponent = 0
    match = re.match(r"^(.*?)(?:\s*(?:[eE]|x\s*10\s*\^?)\s*([-+]?\s*\d+))$", text)
    if match and match.group(2) is not None and ("e" in text.lower() or "x" in text):
        text, exponent = match.group(1).strip(), int(match.group(2).replace(" ", ""))
    text = text.replace(",", ".")
    if text.count(".") > 1:
        return None
    digits = text.lstrip("+-")
    decimals = len(digits.split(".", 1)[1]) if "." in digits else 0
    significant = len(digits.replace(".", "").lstrip("0"))
    if significant < MIN_SIGNIFICANT:
        return None
    try:
        value = float(text) * 10.0 ** exponent
    except (ValueError, OverflowError):
        return None
    places = decimals - exponent
    if percent:
        value, places = value / 100.0, places + 2
    if not math.isfinite(value):
        return None
    return value, places


def _matches(printed: float, places: int, secret: float, truncated_too: bool = True) -> bool:
    """Whether `printed` is `secret` rounded (or truncated) to `places` decimals (sign ignored)."""
    printed, secret = abs(printed), abs(secret)
    if places > 15:
        return math.isclose(printed, secret, rel_tol=1e-12)
    step = 10.0 ** (-places)
    tolerance = step * 1e-6
    rounded = abs(printed - secret) <= step / 2 + tolerance
    truncated = 0 <= secret - printed < step + tolerance if places >= 1 or printed else False
    return rounded or (truncated_too and truncated)


def _magnitudes(values: Iterable[Optional[float]]) -> list[float]:
    """The finite values' absolute values, sorted: what `_any_match` searches."""
    return sorted(abs(float(v)) for v in values if v is not None and math.isfinite(float(v)))


def _any_match(magnitudes: list[float], printed: float, places: int, truncated_too: bool = True) -> bool:
    """Whether some value of `magnitudes` (sorted absolute values) prints as `printed` at `places` decimals
    (`_matches`). Only the values in the window a match must lie in are tried: a campaign's thousands of
    held-out numbers cost a binary search per printed number, not a pass over all of them."""
    printed = abs(printed)
    if places > 15:
        lo, hi = printed * (1 - 1e-9), printed * (1 + 1e-9)
    else:
        step = 10.0 ** (-places)
        tolerance = step * 1e-6
        lo, hi = printed - step / 2 - tolerance, printed + (step if truncated_too else step / 2) + tolerance
    for value in itertools.islice(magnitudes, bisect.bisect_left(magnitudes, lo), None):
        if value > hi:
            return False
        if _matches(printed, places, value, truncated_too):
            return True
    return False


def scrub_numbers(text: str, values: Iterable[float], hits: Optional[dict[str, int]] = None,
                  public: Iterable[float] = ()) -> str:
    """`text` without the printed forms of `values`; a number that is also a printed form of a `public`
    value (a validation metric the agents see anyway) is kept: it tells nothing they do not know."""
    return _scrub_sorted(text, (_magnitudes(values),), (_magnitudes(public),), hits)


#: Values as one or more lists of sorted magnitudes (`_magnitudes`), each searched on its own.
Magnitudes = tuple[list[float], ...]


def _scrub_sorted(text: str, secrets: Magnitudes, shown: Magnitudes, hits: Optional[dict[str, int]]) -> str:
    """`scrub_numbers` with the held-out and public values already as sorted magnitudes."""
    if not any(secrets):
        return text

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        parsed = _parse(token)
        if parsed is None:
            return token
        value, places = parsed
        has_point = "." in token or "," in token or "e" in token.lower() or "%" in token or "x" in token
        if not has_point and places <= 0:
            return token  # a bare integer ("53") is too common to be taken for a leak
        if any(_any_match(m, value, places) for m in secrets) and \
                not any(_any_match(m, value, places, False) for m in shown):
            if hits is not None:
                hits["heldout"] = hits.get("heldout", 0) + 1
            return HELDOUT_MARK
        return token

    return NUMBER.sub(replace, text)


# ---- keys ------------------------------------------------------------------------------------------------


def _skeleton(text: str) -> tuple[str, list[int]]:
    """The text's letters and digits, lower-cased, with the index of each in the original."""
    chars, index = [], []
    for i, ch in enumerate(text):
        if ch.isalnum():
            chars.append(ch.lower())
            index.append(i)
    return "".join(chars), index


def _forms(secret: str) -> list[str]:
    """The key, reversed, and encoded (base64 at the three byte alignments, urlsafe, hex), as skeletons."""
    raw = secret.encode()
    forms = [secret, secret[::-1], raw.hex()]
    for pad in (b"", b"\0", b"\0\0"):
        encoded = base64.b64encode(pad + raw).decode()
        # Drop the characters that depend on the neighbouring bytes.
        forms.append(encoded[len(pad) * 2:-4] if pad else encoded[:-4])
        forms.append(base64.urlsafe_b64encode(pad + raw).decode()[len(pad) * 2:-4])
    return [s for s in (_skeleton(f)[0] for f in forms) if s]


class Scrubber:
    """Removes held-out values and keys from text; see the module's docstring for the forms."""

    def __init__(self, heldout: Iterable[Optional[float]] = (), secrets: Iterable[Optional[str]] = (),
                 public: Iterable[Optional[float]] = (), *,
                 magnitudes: Optional[tuple[Magnitudes, Magnitudes]] = None) -> None:
        """`magnitudes`: the held-out and public values already as lists of sorted absolute values
        (`_magnitudes`), in place of `heldout` and `public` (a match ignores the sign)."""
        if magnitudes is None:
            magnitudes = ((_magnitudes(heldout),), (_magnitudes(public),))
        self._heldout_magnitudes, self._public_magnitudes = magnitudes
        self.secrets = sorted({s.strip() for s in [*secrets, *registered_secrets()] if s and s.strip()},
                              key=len, reverse=True)
        #: What this scrubber removed so far, by kind ("heldout", "key"): the caller records it.
        self.hits: dict[str, int] = {}
        self._windows: set[str] = set()
        self._window = FRAGMENT
        for secret in self.secrets:
            for form in _forms(secret):
                if len(form) < MIN_SECRET:
                    continue
                width = min(FRAGMENT, len(form))
                self._window = min(self._window, width)
        for secret in self.secrets:
            for form in _forms(secret):
                if len(form) >= MIN_SECRET:
                    width = self._window
                    self._windows.update(form[i:i + width] for i in range(len(form) - width + 1))

    def scrub(self, text: Any) -> str:
        """`text` (anything: it is made a string) without held-out values or keys."""
        try:
            out = text if isinstance(text, str) else str(text)
            for secret in self.secrets:
                if secret in out:
                    self.hits["key"] = self.hits.get("key", 0) + out.count(secret)
                    out = out.replace(secret, SECRET_MARK)
            out = self._scrub_keys(out)
            return _scrub_sorted(out, self._heldout_magnitudes, self._public_magnitudes, self.hits)
        except Exception:  # noqa: BLE001 -- a scrubber that fails must fail closed, never crash its caller
            return "[text withheld: it could not be checked for secrets]"

    def _scrub_keys(self, text: str) -> str:
        if not self._windows:
            return text
        skeleton, index = _skeleton(text)
        width = self._window
        hit = [False] * len(skeleton)
        for i in range(len(skeleton) - width + 1):
            if skeleton[i:i + width] in self._windows:
                for j in range(i, i + width):
                    hit[j] = True
        if not any(hit):
            return text
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(hit):
            if hit[i]:
                j = i
                while j + 1 < len(hit) and hit[j + 1]:
                    j += 1
                spans.append((index[i], index[j] + 1))
                i = j + 1
            else:
                i += 1
        self.hits["key"] = self.hits.get("key", 0) + len(spans)
        for start, end in reversed(spans):
            text = text[:start] + SECRET_MARK + text[end:]
        return text

    def scrub_value(self, value: Any) -> Any:
        """Strings inside a JSON-like value scrubbed (dict keys included); other leaves kept."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub_value(v) for v in value)
        return value

    def leaks(self, text: str) -> bool:
        """Whether `text` holds anything `scrub` would remove."""
        return Scrubber(secrets=self.secrets, magnitudes=(self._heldout_magnitudes, self._public_magnitudes)
                        ).scrub(text) != text


def record(session: Any, scrubber: Scrubber, entity: str, entity_id: Optional[int], where: str) -> None:
    """An event saying what was removed from text about to be stored (never the removed text itself):
    a leak attempt is detected and on record, not only silently cleaned."""
    if scrubber.hits:
        from .state import emit

        emit(session, "leak.scrubbed", entity, entity_id, where=where, **dict(scrubber.hits))
        scrubber.hits = {}


def heldout_values(session: Any) -> list[float]:
    """Every held-out metric value the campaign has recorded: trials' and champions' means."""
    from sqlmodel import col, select

    from .state.models import Champion, Trial

    # one column of plain numbers: read through the driver, without building a row object per trial
    trials = session.connection().execute(select(Trial.test_metric).where(col(Trial.test_metric).is_not(None)))
    champions = session.connection().execute(select(Champion.test_metric_mean)
                                             .where(col(Champion.test_metric_mean).is_not(None)))
    return [float(v) for (v,) in [*trials, *champions] if v is not None]


def public_values(session: Any) -> list[float]:
    """The validation numbers the agents are shown (trial metrics, champions' means and spreads)."""
    from sqlmodel import col, select

    from .state.models import Champion, Trial

    trials = session.connection().execute(select(Trial.metric).where(col(Trial.metric).is_not(None)))
    champions = session.connection().execute(select(Champion.metric_mean, Champion.metric_std))
    return [float(v) for v in [*(x for (x,) in trials), *(x for row in champions for x in row)] if v is not None]


class _TrialNumbers:
    """What this process has read of one campaign's trials' numbers: the held-out and public values of
    the finished trials up to `watermark` (the highest trial id read), as sorted magnitudes, and the
    trials not finished then (`pending`), whose numbers may still come. A finished trial's numbers never
    change (ingestion is exactly once; a retry is a new row), so each read takes only the trials above the
    watermark and the pending ones: a scrubber is made for every stored text, and this keeps its cost
    flat however long the campaign's log grows."""

    #: Beyond this many pending trials, the whole column is read again (a query's list stays short).
    MAX_PENDING = 500

    def __init__(self, stamp: Any) -> None:
        self.stamp, self.watermark = stamp, 0
        self.pending: set[int] = set()
        self.heldout: list[float] = []
        self.public: list[float] = []
        #: Trial rows read so far (what a test checks stays small).
        self.rows_read = 0

    def refresh(self, connection: Any) -> None:
        """Read what came since the last refresh into the sorted lists (callers take copies)."""
        from sqlmodel import col, select

        from .state.lifecycle import TrialStatus
        from .state.models import Trial

        finished = (TrialStatus.SUCCEEDED.value, TrialStatus.FAILED.value)
        # two queries, each on the primary key (an OR of the two would scan the table)
        columns = select(Trial.id, Trial.status, Trial.test_metric, Trial.metric)
        rows = [*connection.execute(columns.where(col(Trial.id) > self.watermark)).all(),
                *(connection.execute(columns.where(col(Trial.id).in_(sorted(self.pending)))).all()
                  if self.pending else [])]
        heldout, public = [], []
        self.rows_read += len(rows)
        for trial_id, status, test_metric, metric in rows:
            self.watermark = max(self.watermark, trial_id)
            if status not in finished:
                self.pending.add(trial_id)
                continue
            self.pending.discard(trial_id)
            heldout.append(test_metric)
            public.append(metric)
        for target, values in ((self.heldout, heldout), (self.public, public)):
            for value in _magnitudes(values):
                bisect.insort(target, value)


_TRIAL_NUMBERS: dict[str, _TrialNumbers] = {}
_TRIAL_NUMBERS_LOCK = threading.Lock()


def _campaign_magnitudes(session: Any) -> tuple[Magnitudes, Magnitudes]:
    """The campaign's held-out and public values as sorted magnitudes: its trials' (read incrementally,
    `_TrialNumbers`) and its champions' (a few rows, read each time)."""
    from sqlmodel import select

    from .state.models import Campaign, Champion

    connection = session.connection()
    stamp = connection.execute(select(Campaign.id, Campaign.created_at)).first()
    where = str(connection.engine.url)
    with _TRIAL_NUMBERS_LOCK:
        numbers = _TRIAL_NUMBERS.get(where)
        # another campaign's database at the same path, or too many trials to ask about one by one
        if numbers is None or numbers.stamp != stamp or len(numbers.pending) > _TrialNumbers.MAX_PENDING:
            numbers = _TRIAL_NUMBERS[where] = _TrialNumbers(stamp)
        numbers.refresh(connection)
        trials_heldout, trials_public = list(numbers.heldout), list(numbers.public)
    champions = connection.execute(select(Champion.test_metric_mean, Champion.metric_mean,
                                          Champion.metric_std)).all()
    return ((trials_heldout, _magnitudes(row[0] for row in champions)),
            (trials_public, _magnitudes(x for row in champions for x in row[1:])))


def for_session(session: Any, secrets: Iterable[Optional[str]] = (),
                extra: Iterable[Optional[float]] = (), public: Iterable[Optional[float]] = ()) -> Scrubber:
    """A scrubber for text about to be stored in this campaign's database."""
    heldout_magnitudes, public_magnitudes = _campaign_magnitudes(session)
    return Scrubber(secrets=secrets, magnitudes=((*heldout_magnitudes, _magnitudes(extra)),
                                                 (*public_magnitudes, _magnitudes(public))))


#: Fields of a policy's drafts that name things (matched against other names), never scrubbed.
NAME_FIELDS = frozenset({"signature", "focus", "verdict", "path"})


def clean_draft(draft: Any, scrubber: Scrubber) -> Any:
    """A copy of a pydantic draft (proposal, critique, dead end, implementation) with its model-written
    text scrubbed. Code edits lose keys only: a held-out-looking number in code is code."""
    from pydantic import BaseModel

    if not isinstance(draft, BaseModel):
        return draft
    keys_only = Scrubber(secrets=scrubber.secrets)
    update: dict[str, Any] = {}
    for name in type(draft).model_fields:
        value = getattr(draft, name)
        if name in NAME_FIELDS:
            continue
        if name == "edits":
            update[name] = [e.model_copy(update={"search": keys_only.scrub(e.search),
                                                 "replace": keys_only.scrub(e.replace)})
                            if isinstance(e, BaseModel) else keys_only.scrub_value(e) for e in value]
        elif isinstance(value, (str, dict, list)):
            update[name] = scrubber.scrub_value(value)
    for kind, count in keys_only.hits.items():
        scrubber.hits[kind] = scrubber.hits.get(kind, 0) + count
    return draft.model_copy(update=update)
