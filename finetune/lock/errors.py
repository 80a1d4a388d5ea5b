"""One exception for bad input: entry points print it as one line, `error[<code>]: <message>`, and exit 2.

The code says what kind of refusal it is, so that the web app and the tests match on it, never on the text.
CODES is the one list of them (README's table of codes is checked against it by tests/test_errors.py)."""
import atexit
import gc
import sys
from contextlib import contextmanager

CODES = {
    "usage": "a command line that is not key=value, lacks a required argument or mixes exclusive ones",
    "config": "a config key, option or combination that does not exist or does not go together",
    "range": "a value of the wrong type or outside its range (the schema's bounds)",
    "missing": "a file or folder that is not there",
    "exists": "a file or folder that would be overwritten (nothing is ever overwritten)",
    "io": "a file or folder that cannot be read or written",
    "busy": "a run or dataset folder in use by another process",
    "path": "a path outside the web app's roots",
    "offline": "a hub file or model that cannot be fetched",
    "manifest": "a manifest that is missing, edited, forged or of an unknown format",
    "checkpoint": "a checkpoint that is not there or not of a readable layout",
    "damaged": "a checkpoint or state file that is cut short or fails its recorded hash",
    "binding": "a checkpoint that belongs to another run, or to none",
    "fit": "weights whose names or shapes do not fit the model",
    "model": "a model that differs from the one asked for (pretrained= from another architecture)",
    "upstream": "an installed f5-tts (or peft) that builds another model than the run recorded, or trains wrongly",
    "vocab": "symbols the vocab lacks, or a vocab that is not the run's",
    "data": "a dataset, metadata file or recording folder that cannot be used as it is",
    "audio": "an audio file that cannot be read or holds no samples",
    "vocoder": "a vocoder folder that is not the vocos layout",
    "recogniser": "a speech recogniser or speaker model that cannot be loaded",
    "adapter": "LoRA settings that do not fit the model",
    "adopt": "a checkpoint adopt cannot place without more information",
    "resume": "a resume that would change the run, or has nothing left to do",
    "run": "a run name, root or amendment log that cannot be used",
    "scores": "a scoring that has nothing to score, or a scores file that is not this run's",
    "device": "a device that is not there",
    "memory": "out of memory, or a frame budget that fits no clip",
    "nonfinite": "a loss or gradient that became nan or inf",
    "app": "a web-app form that is not filled in as it needs",
    "internal": "a check of f5tune's own work that failed: a bug to report",
}


class UserError(Exception):
    code = "usage"

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message)
        if code is not None:
            if code not in CODES:  # a bug of ours, not the user's: no one-line dress for it
                raise ValueError(f"unknown error code {code!r}")
            self.code = code

    def line(self) -> str:
        """How an entry point prints it."""
        return f"error[{self.code}]: {self}"


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, for a one-line error: its type's name when the message is
    empty (peft, torch and others raise some without one)."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text[:limit] if limit else text


@contextmanager
def user_errors():
    """Every command line's wrapper: a UserError becomes its one line and exit status 2. At exit, what the
    command imported (torch, f5-tts: 800k objects) is kept out of the collector's final walk (a tiny demo
    fine-tune took 6.4 s and takes 4.8, `python -m infer` 5.3 and 4.9); exit handlers still run."""
    atexit.unregister(gc.freeze)  # once, however many commands one process runs
    atexit.register(gc.freeze)
    try:
        yield
    except UserError as e:
        print(e.line(), file=sys.stderr)
        sys.exit(2)
