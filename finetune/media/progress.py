"""Progress bars that a watcher can read without parsing a console: when F5TUNE_PROGRESS names a file (the web
app sets it for the tools it starts), each bar also writes its state there as one JSON object, replaced
atomically at each redraw: {"desc", "n", "total", "unit", "elapsed", "rate"}. The console bar is tqdm's own."""
import json
import os
import sys

ENV = "F5TUNE_PROGRESS"


def bar(**kwargs):
    """A tqdm bar on stderr (kwargs as tqdm's) that also reports to F5TUNE_PROGRESS when it is set."""
    from tqdm import tqdm

    class Reporting(tqdm):
        def display(self, msg=None, pos=None):
            shown = super().display(msg, pos)
            report(self)
            return shown

    kwargs.setdefault("file", sys.stderr)
    return (Reporting if os.environ.get(ENV) else tqdm)(**kwargs)


def report(b) -> None:
    from ..lock.files import atomic_write_bytes

    d = b.format_dict
    state = {"desc": d.get("prefix") or "", "n": d.get("n"), "total": d.get("total"), "unit": d.get("unit"),
             "elapsed": round(d.get("elapsed") or 0.0, 3), "rate": d.get("rate")}
    try:
        atomic_write_bytes(os.environ[ENV], json.dumps(state).encode(), durable=False)
    except OSError:  # a watcher's file is a courtesy: the work goes on without it
        pass


def read(path) -> dict | None:
    """The last state a bar reported, or None (nothing yet, or a file that is not one)."""
    try:
        state = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("n"), (int, float)) else None
