"""A run folder's life besides its manifest and checkpoints: creation (for start and adopt alike), the
status a reader (the web app) shows, the amendments of resumes, the console file of a launched process."""
import json
import os
import re
import shutil
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from .media.audio import write_wav
from .lock.errors import UserError
from .lock.files import FolderLock, atomic_write, atomic_write_bytes, holder, sha256_bytes
from .lock.manifest import read_manifest, versions, write_manifest
from .lock.schema import unseen_keys
from .lock.vocab import vocab_bytes

STATUS = "status.json"
METRICS = "metrics.jsonl"
AMENDMENTS = "amendments.jsonl"
CONSOLE = "console.log"
CONSOLE_ENV = "F5TUNE_CONSOLE"  # set by a launcher (the web app): the file this process's output goes to
NAME_BYTES = 255  # the longest file name Linux file systems take


def pretrained_record(source: str, path: Path, sha256: str, spec: dict) -> dict:
    """The manifest's `pretrained`: where the weights came from and their sha256, and what their shapes cannot
    show, taken from the model config and recorded as assumed."""
    return {"source": source, "file": path.name, "sha256": sha256,
            "assumed": {f"model.arch.{k}": spec["arch"][k] for k in unseen_keys() if k in spec["arch"]}}


def manifest_body(spec: dict, cfg: dict, pretrained, data, reference_text: str, fingerprint: dict, **extra) -> dict:
    """What every manifest holds, a fine-tune's and an adopted checkpoint's alike (create_run seals it)."""
    return {"created": now(), **extra, "model": spec, "pretrained": pretrained, "data": data,
            "reference": {"audio": "reference.wav", "text": reference_text}, "recommended_weights": "ema",
            "config": cfg, "versions": versions(), "fingerprint": fingerprint}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(name) -> str:
    """A run name is one folder name: no path, nothing empty, nothing the file system would refuse."""
    if not isinstance(name, str) or not name.strip():
        raise UserError("run.name must not be empty; leave it out for <model>-<data>-<time>", code="run")
    if "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise UserError(f"run.name={name!r}: a run name is a single folder name, not a path", code="run")
    if len(name.encode("utf-8")) > NAME_BYTES:
        raise UserError(f"run.name: {len(name.encode('utf-8'))} bytes, over the {NAME_BYTES} a file name may have", code="run")
    return name


def run_path(root: str, name: str) -> Path:
    if not str(root).strip():
        raise UserError("run.root must not be empty (default: runs)", code="run")
    if Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"run.root={root} is a file, not a folder; give a folder for the runs", code="run")
    run_dir = Path(root) / check_name(name)
    if run_dir.exists():
        raise UserError(f"{run_dir} already exists; pick another run.name= (a run folder is never reused; "
                        f"continue it with resume={run_dir})", code="exists")
    return run_dir


def create_run(run_dir: Path, body: dict, vocab: list[str], reference, sample_rate: int) -> tuple[dict, FolderLock]:
    """Make the run folder and hold its lock; write vocab, reference clip and, last, the manifest.
    A folder is either a whole run or, if this fails midway, removed again: it held nothing yet."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {run_dir.parent} ({e.strerror}); check run.root=", code="io")
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise UserError(f"{run_dir} already exists; pick another run.name=", code="exists")
    except OSError as e:
        raise UserError(f"cannot create {run_dir} ({e.strerror}); check run.root= ({run_dir.parent})", code="io")
    try:
        lock = FolderLock(run_dir, "training").acquire()
        atomic_write_bytes(run_dir / body["model"]["vocab"]["file"], vocab_bytes(vocab))
        atomic_write(run_dir / body["reference"]["audio"], lambda tmp: write_wav(tmp, reference, sample_rate))
        manifest = write_manifest(run_dir, body)
    except BaseException as e:
        shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot write the run folder {run_dir} ({e.strerror})", code="io")
        raise
    claim_console(run_dir)
    return manifest, lock


def claim_console(run_dir: Path) -> None:
    """Move the launcher's output file into the new run folder; the open file keeps receiving output."""
    source = os.environ.get(CONSOLE_ENV)
    if source and Path(source).is_file() and Path(source).resolve() != (run_dir / CONSOLE).resolve():
        try:
            os.replace(source, run_dir / CONSOLE)
        except OSError as e:  # another file system: the output stays where the launcher put it
            print(f"warning: {CONSOLE_ENV}={source} stays where it is ({e.strerror})", file=sys.stderr)
        else:
            os.environ[CONSOLE_ENV] = str(run_dir / CONSOLE)


# ---- status -------------------------------------------------------------------------------------------

def write_status(run_dir: Path, state: str, **fields) -> None:
    previous = read_status(run_dir) or {}
    status = {**previous, **fields, "state": state, "pid": os.getpid(), "host": socket.gethostname(),
              "updated": now()}
    atomic_write_bytes(run_dir / STATUS, json.dumps(status, indent=1).encode(), durable=False)


def read_status(run_dir: Path) -> dict | None:
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


# ---- amendments ---------------------------------------------------------------------------------------

def _entry_hash(entry: dict) -> str:
    return sha256_bytes(json.dumps({k: v for k, v in entry.items() if k != "sha256"}, sort_keys=True).encode())


def read_amendments(run_dir: Path, manifest: dict, repair: bool = False) -> list[dict]:
    """The append-only amendments, each chained to the one before it and the first to the manifest.

    A last line cut short (a resume killed while appending it, before it trained anything) is ignored with
    a warning, and with repair=True removed from the file; any other broken line refuses."""
    path = run_dir / AMENDMENTS
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # a whole file ends with a newline
    entries, prev = [], manifest["sha256"]
    for n, line in enumerate(lines[:-1] if not torn else lines, start=1):
        try:
            entry = json.loads(line)
            ok = isinstance(entry, dict) and entry.get("prev") == prev and entry.get("sha256") == _entry_hash(entry) \
                and isinstance(entry.get("changes"), dict)
        except ValueError:
            ok = False
        if not ok and torn and n == len(lines):
            print(f"warning: {path}: its last line was cut short (a resume killed while writing it); "
                  "it is ignored" + (" and removed" if repair else ""), file=sys.stderr)
            if repair:
                atomic_write_bytes(path, b"".join(line + b"\n" for line in lines[:-1]))
            break
        if not ok:
            raise UserError(f"{path}: line {n} is edited or out of its chain; the file is append-only: restore "
                            "that line as a resume wrote it", code="run")
        entries.append(entry)
        prev = entry["sha256"]
    return entries


def append_amendment(run_dir: Path, manifest: dict, changes: dict) -> None:
    entries = read_amendments(run_dir, manifest, repair=True)
    entry = {"time": now(), "prev": entries[-1]["sha256"] if entries else manifest["sha256"],
             "manifest_sha256": manifest["sha256"], "changes": changes}
    entry["sha256"] = _entry_hash(entry)
    line = (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode()
    fd = os.open(run_dir / AMENDMENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of the whole line: a crash leaves it whole or cut, never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_and_config(run_dir: Path) -> tuple[dict, dict]:
    """The run's manifest and its current config: the manifest's, with every amendment applied."""
    from .config import apply_changes

    manifest = read_manifest(run_dir)
    config = manifest["config"]
    for entry in read_amendments(run_dir, manifest):
        config = apply_changes(config, {k: v[1] for k, v in entry["changes"].items()}, f"{run_dir / AMENDMENTS}")
    return manifest, config


# ---- reading a run folder while it is written: its state and metrics -------------------------------

STATES = ("running", "finished", "stopped", "crashed", "interrupted")
_LOG_LINE = re.compile(r"update (\d+) epoch (\d+) loss (\S+) lr (\S+) grad_norm (\S+)")


def state(run_dir: Path, status: dict | None = None) -> str:
    """The run's state: status.json read against the run's lock. `running` with nobody holding the lock
    means the process died without a word (kill -9, power cut): `interrupted`."""
    held = holder(run_dir)
    status = status if status is not None else read_status(run_dir)
    if status is None:  # a run from before status.json, or one in its first second
        if held:
            return "running"
        return "finished" if _log_says_done(run_dir) else "interrupted"
    said = status.get("state")
    if said == "running":
        return "running" if held else "interrupted"
    return said if said in STATES else f"unknown ({said})"


def _log_says_done(run_dir: Path) -> bool:
    try:
        return "done:" in tail(Path(run_dir) / "train.log", 512)
    except OSError:
        return False


def tail(path: Path, size: int) -> str:
    """The last `size` bytes of a file as text."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - size, 0))
        return f.read().decode("utf-8", "replace")


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl, one dict per logged update (lines that do not parse are skipped: a kill can tear the
    last one); runs from before it existed: the same numbers read from train.log."""
    path = Path(run_dir) / METRICS
    rows = []
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("update"), int):
                    rows.append(row)
        return rows
    log = Path(run_dir) / "train.log"
    if log.is_file():
        for m in _LOG_LINE.finditer(log.read_text(encoding="utf-8", errors="replace")):
            rows.append({"update": int(m[1]), "epoch": int(m[2]), "loss": float(m[3]), "lr": float(m[4]),
                         "grad_norm": float(m[5])})
    return rows


def last_metrics(run_dir: Path) -> dict | None:
    """The last logged update, read from the end of the file only (the runs table does this per refresh)."""
    path = Path(run_dir) / METRICS
    try:
        lines = tail(path, 8192).splitlines()
    except OSError:
        rows = read_metrics(run_dir)
        return rows[-1] if rows else None
    for line in reversed(lines):
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "update" in row:
                return row
        except ValueError:
            continue
    return None
