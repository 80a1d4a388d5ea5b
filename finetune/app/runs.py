"""Reading run folders while they are written: the runs table, a run's state, metrics, checkpoints and samples.

Nothing here writes. The manifest is read-only and checkpoints appear by rename, so a reader never sees
half of either; metrics.jsonl may end in a torn line after a kill, which is skipped."""
import json
import os
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from finetune.lock.errors import UserError
from finetune.lock.manifest import NAME as MANIFEST, read_manifest
from finetune.lock.schema import flatten
from finetune.runfolder import (last_metrics, read_amendments, read_metrics, read_status,  # noqa: F401 (page_run)
                                state, tail)

COLUMNS = ["run", "model", "family", "data", "clips", "hours", "updates", "last loss", "state", "created", "size"]


def list_runs(root: Path) -> list[Path]:
    """Run folders directly under the root (those holding a manifest), newest first."""
    try:
        found = [p for p in Path(root).iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


@lru_cache(maxsize=1024)
def _manifest(path: str, mtime_ns: int, size: int) -> tuple[dict | None, str | None]:
    # a manifest never changes once written: parsing and hashing it again on every refresh is waste
    try:
        return read_manifest(Path(path)), None
    except UserError as e:
        return None, str(e)


def manifest(run_dir: Path) -> tuple[dict | None, str | None]:
    """(the verified manifest, None) or (None, why it is not)."""
    try:
        st = (Path(run_dir) / MANIFEST).stat()
    except OSError as e:
        return None, f"{run_dir}: no readable {MANIFEST} ({e.strerror})"
    return _manifest(str(run_dir), st.st_mtime_ns, st.st_size)





def folder_size(path: Path) -> int:
    """Bytes on disk under a run folder, walked again only when a folder in it changed (a file added, removed
    or renamed: a checkpoint saved), since the table asks every few seconds; files that only grow, such as
    metrics.jsonl, are counted again at the next such change."""
    try:
        key = tuple((e.name, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
        return _size(str(path), Path(path).stat().st_mtime_ns, key)
    except OSError:
        return 0


@lru_cache(maxsize=1024)
def _size(path: str, mtime_ns: int, subfolders: tuple) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed while we walked (a pruned checkpoint, a renamed temporary)
                pass
    return total


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def when(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(iso)


def progress(run_dir: Path, m: dict, status: dict | None, last: dict | None) -> tuple[int | None, int | None]:
    """(updates done, updates planned): from status.json, else the last metrics line and the config."""
    from finetune.lock.checkpoints import list_checkpoints

    if status and isinstance(status.get("update"), int):
        return status["update"], status.get("planned")
    done = last["update"] if last else max(list_checkpoints(run_dir), default=None)
    return done, m["config"]["train"].get("max_updates")


def row(run_dir: Path) -> list:
    m, error = manifest(run_dir)
    status = read_status(run_dir)
    run_state = state(run_dir, status)
    size = human_size(folder_size(run_dir))
    if m is None:
        return [run_dir.name, "", "", f"unreadable manifest: {error}", None, None, "", "", run_state, "", size]
    last = last_metrics(run_dir)
    done, planned = progress(run_dir, m, status, last)
    data, chosen = m["data"], {**m["data"], **m["config"]["data"]}  # name and path are in the config
    data_name = chosen.get("name", "")
    if chosen.get("path"):
        data_name = f"{data_name} ({Path(chosen['path']).name})"
    loss = last.get("loss") if last else None
    return [run_dir.name, m["model"]["name"], m["model"].get("family", m["model"]["backbone"]), data_name,
            data.get("clips"), data.get("hours"), f"{done if done is not None else 0} / {planned or '?'}",
            None if loss is None else round(float(loss), 4), run_state, when(m.get("created")), size]


def table(root: Path) -> list[list]:
    return [row(p) for p in list_runs(root)]


def checkpoint_rows(run_dir: Path, m: dict) -> list[list]:
    """update, binding to this run's manifest, size (weights + training state), weight sets present."""
    from finetune.lock.checkpoints import binding, header, list_checkpoints, state_path
    from finetune.lock.layouts import weight_sets

    rows = []
    for update, path in sorted(list_checkpoints(run_dir).items(), reverse=True):
        try:
            shapes, meta = header(path)
        except UserError as e:
            rows.append([update, f"damaged: {e}", "", ""])
            continue
        try:
            size = path.stat().st_size + (state_path(run_dir, update).stat().st_size
                                          if state_path(run_dir, update).exists() else 0)
        except OSError:
            size = 0
        rows.append([update, binding(meta, m), human_size(size), ", ".join(weight_sets(shapes, meta))])
    return rows


def amendments(run_dir: Path, m: dict) -> tuple[list[dict], str | None]:
    """Resume's amendments (each chained to the one before and the first to the manifest), or why not."""
    try:
        return read_amendments(run_dir, m), None
    except UserError as e:
        return [], str(e)


def samples(run_dir: Path) -> tuple[list[tuple[int, Path | None, Path | None]], list[Path]]:
    """The samples written at checkpoints [(update, generated, reference)], and every other wav in samples/."""
    folder = Path(run_dir) / "samples"
    at, other = {}, []
    for p in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        m = re.fullmatch(r"update_(\d+)_(gen|ref)\.wav", p.name)
        if m:
            at.setdefault(int(m[1]), {})[m[2]] = p
        else:
            other.append(p)
    return [(u, d.get("gen"), d.get("ref")) for u, d in sorted(at.items())], other


def as_trained(run_dir: Path, m: dict) -> dict:
    """The manifest with the config the run trains with now: every resume's amendments applied (a run amended
    to 150 updates shows 150). Amendments that cannot be read leave the manifest's config."""
    from finetune.runfolder import manifest_and_config

    try:
        return {**m, "config": manifest_and_config(Path(run_dir))[1]}
    except UserError:
        return m


def diff(a: dict, b: dict) -> list[list]:
    """Two manifests key by key: [key, a, b, same], the keys that differ first, each group in manifest order.
    A path is compared as the file it names (relative paths from the working folder, links followed)."""
    fa, fb = ({k: _resolved(k, v) for k, v in flatten(m).items()} for m in (a, b))
    keys = list(dict.fromkeys([*fa, *fb]))
    rows = [[k, _show(fa.get(k, ABSENT)), _show(fb.get(k, ABSENT)), k in fa and k in fb and fa[k] == fb[k]]
            for k in keys]
    return [r for r in rows if not r[3]] + [r for r in rows if r[3]]


PATH_NAMES = ("path", "root", "pretrained", "vocab", "audio", "input")  # keys whose value names a file or folder


def _resolved(key: str, v):
    if isinstance(v, str) and v and "://" not in v and ("/" in v or key.split(".")[-1] in PATH_NAMES):
        try:
            if os.path.lexists(v):
                return str(Path(v).resolve())
        except (OSError, ValueError):
            pass
    return v


ABSENT = "(absent)"


def _show(v) -> str:
    return "null" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (bool, list, dict)) else str(v)
