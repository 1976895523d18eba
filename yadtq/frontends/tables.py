"""DataFrames as terminal tables, for every command that prints one (``yadtq tasks``, ``demo``, ``watch``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: This machine's time zone: tables show local times.
LOCAL = datetime.now().astimezone().tzinfo


def render(frame: pd.DataFrame, width: int = 36) -> str:
    """A DataFrame as a terminal table: local times, long cells shortened, no index."""
    if frame.empty:
        return "(none)"
    shown = frame.copy()
    for column in shown.columns:
        series = shown[column]
        if str(series.dtype).startswith("datetime64"):
            shown[column] = series.dt.tz_convert(LOCAL).dt.strftime("%H:%M:%S.%f").str[:-3].fillna("-")
        else:
            shown[column] = series.map(lambda v: _cell(v, width))
    return shown.to_string(index=False)


def _cell(value: Any, width: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"
