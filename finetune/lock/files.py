"""Atomic writes and file hashes: a file either appears whole under its name or not at all."""
import hashlib
import os
from pathlib import Path


KILL_AT = "F5TUNE_KILL_AT"  # crash tests only: the file name whose write is cut short by SIGKILL


def atomic_write(path: Path, write, durable: bool = True) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash never leaves a partial file.
    durable=False skips the fsyncs, for files a crash may lose but must not tear (a status file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if os.environ.get(KILL_AT) == path.name:
            _die_mid_write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _die_mid_write(tmp: Path) -> None:
    """What kill -9 or a power cut leaves in the middle of a write: half the bytes, never renamed."""
    import signal

    os.truncate(tmp, tmp.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), durable)


def read_jsonl(path: Path) -> list[dict]:
    """The mappings of a JSON-lines file, in order; a line a kill tore (or any that is not a mapping) is skipped,
    and a missing file has none."""
    import json

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def append_jsonl(path: Path, entries: list[dict]) -> None:
    """Append lines to a JSON-lines file (a cache) and flush them to disk; a line torn by a kill before them is
    ended first, so that it stays one bad line and does not swallow the first new one."""
    import json

    with open(path, "a", encoding="utf-8") as f:
        if f.tell() and not Path(path).read_bytes().endswith(b"\n"):
            f.write("\n")
        f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        f.flush()
        os.fsync(f.fileno())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FolderLock:
    """One writer per folder: an exclusive flock on `<folder>/.lock`, which the kernel releases when the
    process ends, however it ends (kill -9 included). flock conflicts between any two open files, in one
    process or many; on NFS, Linux carries it out as a POSIX lock that the server enforces across hosts
    (NFSv4, or NFSv3 with lockd), so hosts sharing a runs folder exclude each other too. The file holds the
    holder's PID and host, for the refusal message. `name` picks another lock file in the folder, for a
    writer that must not wait on the folder's main one (scores.json is written while a run trains)."""

    NAME = ".lock"

    def __init__(self, folder, what: str, name: str = NAME):
        self.folder, self.what, self.name, self.fd = Path(folder), what, name, None

    def acquire(self, wait: float = 1.0) -> "FolderLock":
        import fcntl
        import socket
        import time

        from .errors import UserError

        try:
            fd = os.open(self.folder / self.name, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{self.folder}: cannot take its lock ({e.strerror or type(e).__name__}); {self.what} "
                            "needs a writable folder", code="io")
        deadline = time.monotonic() + wait  # a reader's brief probe (holder()) must not refuse a writer
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    who = holder(self.folder, self.name) or "another process"
                    raise UserError(f"{self.folder} is in use by {who}; "
                                    f"{self.what} needs it alone: wait for that process to end or stop it", code="busy")
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases the flock
            self.fd = None

    def __enter__(self):
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()


def holder(folder, name: str = FolderLock.NAME) -> str | None:
    """Who holds the folder's lock ("pid N on host"), or None when nobody does. Never blocks."""
    import fcntl

    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
        return text or "another process"
    finally:
        os.close(fd)


def check_writable(path: Path, key: str) -> None:
    """Fail before the work, not after it, when `path`'s folder cannot take a new file: a probe file is
    created and removed there (permission bits say nothing to root; read-only mounts and /sys only answer
    a real attempt)."""
    import tempfile

    from .errors import UserError

    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".f5tune-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{key}={path}: cannot write there ({e.strerror or type(e).__name__}); pick a writable folder", code="io")
