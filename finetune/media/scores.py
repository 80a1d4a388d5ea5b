"""A run's checkpoint scores (runs/<name>/scores.json, written by python -m infer.score) and the best of them.

One row per scored (checkpoint, weight set). Rows are comparable on recognition and speaker similarity only
when they were scored the same way (recogniser, speaker model, seed, steps, vocoder, ...): that is a row's
`setup`, described once in `setups`. Validation loss is always comparable within a run (same held-out
clips, the run's train.seed).

The best row: when any row has a word error rate, the lowest WER among the rows scored with the setup of
the most recently scored row that has one (ties: lower validation loss); otherwise, when any row has a
quality score (the predicted MOS of its synthesised speech), the highest quality among the rows scored with
the setup of the most recently scored row that has one (ties: lower validation loss); otherwise the lowest
validation loss of all rows.
"""
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..lock.errors import UserError, first_line
from ..lock.files import FolderLock, atomic_write_bytes

NAME = "scores.json"
FORMAT = "f5tune-scores/1"


def scores_path(run_dir) -> Path:
    return Path(run_dir) / NAME


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def read_scores(run_dir, manifest_sha: str | None = None) -> dict | None:
    """The run's scores, or None when it has none yet; refuses a file that is malformed or belongs to another run."""
    path = scores_path(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({first_line(e, 80)}); delete it and score the run again", code="io")
    ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("rows"), list) \
        and isinstance(data.get("setups"), dict) and all(isinstance(v, dict) for v in data["setups"].values()) \
        and all(
            isinstance(r, dict) and isinstance(r.get("update"), int) and r.get("weights") in ("ema", "online")
            and isinstance(r.get("val_loss"), (int, float)) and isinstance(r.get("setup"), str)
            and r["setup"] in data["setups"] and isinstance(r.get("scored"), str)
            and all(_number_or_none(r.get(k)) for k in ("wer", "cer", "speaker_similarity", "quality"))
            for r in data["rows"])
    if not ok:
        raise UserError(f"{path}: not a {FORMAT} file; delete it and score the run again with python -m infer.score", code="scores")
    if manifest_sha and data.get("manifest_sha256") != manifest_sha:
        raise UserError(f"{path}: scores of another run (manifest {str(data.get('manifest_sha256'))[:12]}, this "
                        f"run's is {manifest_sha[:12]}); delete it and score this run again", code="scores")
    return data


def describe_setup(mark, d: dict) -> str:
    """One line saying how the rows of a setup were scored."""
    asr, speaker, synth = d.get("asr") or {}, d.get("speaker") or {}, d.get("synthesis") or {}
    return (f"setup {mark}: recogniser {asr.get('model', 'none')}; speaker model {speaker.get('model', 'none')}; "
            f"quality {(d.get('quality') or {}).get('model', 'none')}; "
            f"seed {synth.get('seed')}, nfe_step {synth.get('nfe_step')}, vocoder {synth.get('vocoder')}")


def best_row(rows: list[dict]) -> tuple[dict, str] | None:
    """(the best row, what it was picked by: "wer", "quality" or "val_loss"); None for no rows. See the module's
    rule."""
    for by, sign in (("wer", 1), ("quality", -1)):  # lower WER is better, higher quality
        scored = [r for r in rows if r.get(by) is not None]
        if scored:
            setup = max(scored, key=lambda r: r["scored"])["setup"]
            same = [r for r in scored if r["setup"] == setup]
            return min(same, key=lambda r: (sign * r[by], r["val_loss"], r["update"])), by
    if rows:
        return min(rows, key=lambda r: (r["val_loss"], r["update"])), "val_loss"
    return None


def merge(old: dict | None, rows: list[dict], setup: str, described: dict, head: dict) -> dict:
    """The scores file after scoring `rows` with `setup`: earlier rows of other checkpoints or weight sets are
    kept; a row scored again replaces its old one; setups no row uses any more are dropped."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    new = {(r["update"], r["weights"]): r | {"setup": setup, "scored": now} for r in rows}
    kept = [r for r in (old or {}).get("rows", []) if (r["update"], r["weights"]) not in new]
    merged = sorted(kept + list(new.values()), key=lambda r: (r["update"], r["weights"]))
    setups = {**(old or {}).get("setups", {}), setup: described}
    setups = {k: v for k, v in setups.items() if any(r["setup"] == k for r in merged)}
    best = best_row(merged)
    return {"format": FORMAT, **head, "setups": setups, "rows": merged,
            "best": {"update": best[0]["update"], "weights": best[0]["weights"], "by": best[1]}}


def write_scores(run_dir, data: dict) -> Path:
    path = scores_path(run_dir)
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def merge_into(run_dir, manifest_sha: str, rows: list[dict], setup: str, described: dict,
               head: dict) -> tuple[Path, dict]:
    """Read, merge and write scores.json under a lock of its own, so that two scorings of one run at once both
    keep their rows. Not the run's lock: that one is the trainer's, and a run is scored while it trains."""
    with FolderLock(run_dir, "writing scores.json", name=".scores.lock").acquire(wait=120):
        scores = merge(read_scores(run_dir, manifest_sha), rows, setup, described, head)
        return write_scores(run_dir, scores), scores


def resolve_ckpt(run_dir, ckpt, weights) -> tuple[str, str]:
    """What ckpt= and weights= mean for a run: `ckpt=best` is the best scored row (of the weight set asked for,
    if weights= was given; else of either, and then its set), said on stderr; weights=None means ema."""
    if str(ckpt) != "best":
        return str(ckpt), weights or "ema"
    from ..lock.checkpoints import header, list_checkpoints
    from ..lock.manifest import read_manifest

    run_dir = Path(run_dir)
    scores = read_scores(run_dir, read_manifest(run_dir)["sha256"])
    if scores is None:
        raise UserError(f"ckpt=best: {run_dir} has no scores yet; score it first with python -m infer.score "
                        f"run={run_dir} (or pick ckpt=last or an update)", code="scores")
    found = best_row([r for r in scores["rows"] if weights in (None, r["weights"])])
    if found is None:
        raise UserError(f"ckpt=best: {scores_path(run_dir)} has no row for weights={weights}; score them with "
                        f"python -m infer.score run={run_dir} weights={weights}", code="scores")
    (row, by), update = found, found[0]["update"]
    path = list_checkpoints(run_dir).get(update)
    if path is None:
        raise UserError(f"ckpt=best: the best scored checkpoint, update {update}, is no longer in {run_dir} "
                        f"(pruned by train.keep_last_n?); score the run again, or pick ckpt= yourself", code="scores")
    if header(path)[1].get(f"{row['weights']}_sha256") != row.get("weights_sha256"):
        raise UserError(f"ckpt=best: {path} is not the file that was scored (its {row['weights']} weights changed); "
                        f"score the run again with python -m infer.score run={run_dir}", code="scores")
    shown = f"WER {row['wer']:.3f}, " if by == "wer" else f"quality {row['quality']:.2f}, " if by == "quality" else ""
    print(f"ckpt=best: update {update}, {row['weights']} weights ({shown}validation loss {row['val_loss']:.4f}; "
          f"best by {by} in {scores_path(run_dir)})", file=sys.stderr)
    return str(update), row["weights"]
