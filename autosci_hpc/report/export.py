"""The campaign log as files for other tools: one CSV per table, and Parquet when pyarrow is there.

JSON columns (overrides, seed metrics, rosters, ...) are written as JSON text, so a CSV cell holds
exactly what the database holds; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .load import TABLES, CampaignData
from .metrics import best_so_far, lineage


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and any(isinstance(v, (dict, list)) for v in out[column]):
            out[column] = [_json(v) for v in out[column]]
    return out


def _json(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value


def export_log(data: CampaignData, out: Path) -> list[str]:
    """Write every table (and the best-so-far curve and champion lineage) into `out`.

    Returns one line per file written, and a line saying Parquet was skipped when pyarrow is not
    installed (CSV alone is then complete: nothing else depends on Parquet).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames: dict[str, pd.DataFrame] = {name: getattr(data, name) for name in TABLES}
    frames["campaign"] = pd.DataFrame([{k: v for k, v in data.campaign.items()}])
    frames["best_so_far"] = best_so_far(data)
    frames["lineage"] = lineage(data)
    parquet = importlib.util.find_spec("pyarrow") is not None
    done = []
    for name, frame in frames.items():
        flat = _flat(frame)
        path = out / f"{name}.csv"
        flat.to_csv(path, index=False)
        done.append(f"{path} ({len(flat)} rows)")
        if parquet:
            target = out / f"{name}.parquet"
            flat.to_parquet(target, index=False)
            done.append(f"{target} ({len(flat)} rows)")
    if not parquet:
        done.append("parquet skipped: pyarrow is not installed (CSV files only)")
    return done
