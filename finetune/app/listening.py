"""Blind A/B listening: the two sides shuffled before they are played, and the listener's choice appended to
listening.jsonl in the run folder of each side (one JSON line, written whole), then revealed."""
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

FILE = "listening.jsonl"
CHOICES = {"first": "the first", "second": "the second", "same": "no difference"}


def shuffle() -> bool:
    """True: B is played first."""
    return secrets.randbelow(2) == 1


def record(run_dirs: list[Path], a: dict, b: dict, b_first: bool, choice: str, voice: dict) -> dict:
    """Append the choice (`first`, `second` or `same`, of the order played) to each run's listening.jsonl, as
    the side it was: {"time", "a", "b", "played_first", "choice": "a" | "b" | "same", "voice"}."""
    if choice not in CHOICES:
        raise ValueError(choice)
    side = {"first": "b" if b_first else "a", "second": "a" if b_first else "b", "same": "same"}[choice]
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "a": a, "b": b,
             "played_first": "b" if b_first else "a", "choice": side, "voice": voice}
    line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode()
    for run_dir in dict.fromkeys(run_dirs):
        fd = os.open(Path(run_dir) / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of the whole line: a crash leaves it whole or cut, never interleaved
        finally:
            os.close(fd)
    return entry


def describe(side: dict) -> str:
    return f"run {side['run']}, update {side['update']}, {side['weights']} weights"
