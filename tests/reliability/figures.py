"""Figures of the reliability suite: printed as ``FIGURE:`` lines, gathered for a table and JSON.

Every scenario calls :func:`figure` for what it measured.  pytest prints the
lines of the whole run again at the end (``conftest.pytest_terminal_summary``)
and writes them as JSON when ``CAAS_RELIABILITY_FIGURES=path`` is set; the
soak command does the same with ``--json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "figure", "machine", "table", "write_json"]

#: Every figure recorded in this process, in order.
FIGURES: list[dict[str, Any]] = []


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def figure(scenario: str, name: str, value: Any, unit: str = "", **context: Any) -> None:
    """Record and print one figure: ``FIGURE: scenario name = value unit (context)``."""
    entry = {"scenario": scenario, "name": name, "value": value, "unit": unit, **context}
    FIGURES.append(entry)
    print(line(entry), flush=True)


def rss_growth(
    scenario: str,
    server_id: str,
    before_kib: int,
    after_kib: int,
    connections: tuple[int | None, int | None],
) -> None:
    """The figure of one node's RSS growth between two points of a run."""
    figure(
        scenario,
        f"rss_growth_{server_id}",
        round((after_kib - before_kib) / 1024, 2),
        "MiB",
        before_mib=round(before_kib / 1024, 1),
        after_mib=round(after_kib / 1024, 1),
        connections_before=connections[0],
        connections_after=connections[1],
    )


def line(entry: dict[str, Any]) -> str:
    extra = {k: v for k, v in entry.items() if k not in ("scenario", "name", "value", "unit")}
    text = f"FIGURE: {entry['scenario']} {entry['name']} = {_show(entry['value'])}"
    if entry["unit"]:
        text += f" {entry['unit']}"
    if extra:
        text += " (" + ", ".join(f"{k}={_show(v)}" for k, v in extra.items()) + ")"
    return text


def table(entries: Iterable[dict[str, Any]]) -> str:
    """A plain text table: scenario, figure, value, unit."""
    rows = [(e["scenario"], e["name"], _show(e["value"]), e["unit"]) for e in entries]
    if not rows:
        return "(no figures)"
    widths = [
        max(len(r[i]) for r in [("scenario", "figure", "value", "unit"), *rows]) for i in range(4)
    ]
    out = []
    for row in [("scenario", "figure", "value", "unit"), *rows]:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_json(path: str | os.PathLike[str], entries: list[dict[str, Any]], **meta: Any) -> None:
    Path(path).write_text(
        json.dumps({"machine": machine(), **meta, "figures": entries}, indent=2, default=str) + "\n"
    )
