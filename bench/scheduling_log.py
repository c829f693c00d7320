"""Reading one preemption out of the worker's log (bench/scheduling.py).

The worker runs one job at a time (one slot), so the lines between a job's
``job <id>: attempt`` and the next job's are that job's. Every line of Celery's log
carries a millisecond timestamp ``[YYYY-mm-dd HH:MM:SS,mmm: ...]``; TensorFlow's lines
(``loss = ..., step = ...``, ``Saving checkpoints for N``, ``Restoring parameters from
.../model.ckpt-N``) are in it too.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")
_LOSS = re.compile(r"loss = [^,]+, step = (\d+)")
_SAVE = re.compile(r"Saving checkpoints for (\d+) into")
_AFTER_SAVE = re.compile(r"after saving checkpoint (\d+)")
_RESTORE = re.compile(r"Restoring parameters from .*model\.ckpt-(\d+)")
_YIELDED = re.compile(r"job (\S+): yielded at step (\d+)")


@dataclass
class Line:
    at: datetime
    text: str


def read_lines(path: Path) -> list[Line]:
    """The log's stamped lines (continuation lines are dropped)."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = _STAMP.match(raw)
        if match:
            lines.append(Line(datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"), raw))
    return lines


def _first(lines: list[Line], start: int, needle: str | re.Pattern[str]) -> int | None:
    for i in range(start, len(lines)):
        text = lines[i].text
        if needle.search(text) if isinstance(needle, re.Pattern) else needle in text:
            return i
    return None


def attempts(lines: list[Line], job_id: str) -> list[int]:
    """Indexes of the job's ``attempt`` lines."""
    return [i for i, line in enumerate(lines) if f"job {job_id}: attempt" in line.text]


def first_step(lines: list[Line], job_id: str) -> tuple[datetime, int] | None:
    """The time and step of the job's first ``loss = ..., step = ...`` line."""
    starts = attempts(lines, job_id)
    if not starts:
        return None
    i = _first(lines, starts[0], _LOSS)
    if i is None:
        return None
    match = _LOSS.search(lines[i].text)
    assert match is not None
    return lines[i].at, int(match[1])


def span(marks: dict[str, object], start: str, end: str) -> float | None:
    """Seconds from mark ``start`` to mark ``end``; None when either is missing."""
    a, b = marks.get(start), marks.get(end)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (b - a).total_seconds()
    return None


def preemption(lines: list[Line], low: str, high: str, attempt: int) -> dict[str, object]:
    """The marks of the low job's ``attempt``-th (0-based) preemption in favour of
    ``high``: asked, checkpoint saved, yielded; the high job's pick-up and first step;
    the low job's next attempt and the checkpoint it restored."""
    starts = attempts(lines, low)
    out: dict[str, object] = {}
    if attempt >= len(starts):
        return out
    begin = starts[attempt]
    asked = _first(lines, begin, f"job {low}: asked to yield (preempt)")
    yielded = _first(lines, begin, _YIELDED)
    if asked is None or yielded is None:
        return out
    match = _YIELDED.search(lines[yielded].text)
    assert match is not None
    # The checkpoint the job stopped at: the one of the yielded step (the preemption's own,
    # or an interval's save already under way when the request came).
    save = _first(lines, begin, re.compile(rf"Saving checkpoints for {match[2]} into"))
    save_end = _first(lines, save, _AFTER_SAVE) if save is not None else None
    if save is not None and (save > yielded or (save_end or 0) > yielded):
        save = save_end = None
    high_start = _first(lines, yielded, f"job {high}: attempt")
    high_step = _first(lines, high_start, _LOSS) if high_start is not None else None
    nxt = starts[attempt + 1] if attempt + 1 < len(starts) else None
    restore = _first(lines, nxt, _RESTORE) if nxt is not None else None
    restored = _RESTORE.search(lines[restore].text) if restore is not None else None

    def at(i: int | None) -> datetime | None:
        return lines[i].at if i is not None else None

    out.update(
        low_attempt_at=at(begin),
        asked_at=at(asked),
        save_start_at=at(save),
        save_end_at=at(save_end),
        yielded_at=at(yielded),
        yielded_step=int(match[2]),
        high_attempt_at=at(high_start),
        high_first_step_at=at(high_step),
        low_next_attempt_at=at(nxt),
        restored_step=int(restored[1]) if restored else None,
    )
    return out
