"""Atomic writes and file hashes: a file either appears whole under its name or not at all."""
import hashlib
import os
from pathlib import Path


KILL_AT = "F5TUNE_KILL_AT"  # crash tests only: the file name whose write is cut short by SIGKILL


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash never leaves a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if os.environ.get(KILL_AT) == path.name:
            _die_mid_write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
