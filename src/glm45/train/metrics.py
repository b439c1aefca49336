"""`metrics.jsonl` (one JSON record per optimizer step) and `summary.json`.

Records are appended per step. A resumed run first cuts the file back to the
checkpoint's step (dropping the steps the killed run did after it, and a line half-written by
the kill), so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file; a line cut short by a crash is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class MetricsLog:
    """Appends step records to `path`, after keeping only those with step <= `resume_step`."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".tmp-{self.path.name}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        # Open per record: nothing stays buffered (or open) when the process is killed.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
