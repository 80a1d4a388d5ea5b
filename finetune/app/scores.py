"""A run's checkpoint scores (runs/<name>/scores.json, written by python -m infer.score; format and best rule in
finetune/media/scores.py) as the Compare page shows them: one row per scored checkpoint and weight set with the
best marked, and those rows as choices for A/B listening."""
from pathlib import Path

from finetune.lock.errors import UserError

from . import runs

HEADERS = ["best", "update", "weights", "val_loss", "wer", "cer", "similarity", "quality", "setup", "scored"]
BEST = "★"
BY = {"wer": "the lowest WER among the rows scored like the latest one with a WER",
      "quality": "the highest quality score among the rows scored like the latest one with one (no WER)",
      "val_loss": "the lowest validation loss"}


def key(row: dict) -> str:
    """A row as a choice's value: `<update> <weights>`."""
    return f"{row['update']} {row['weights']}"


def parse_key(text) -> tuple[str, str]:
    update, _, weights = str(text or "").partition(" ")
    if not update.isdigit() or weights not in ("ema", "online"):
        raise UserError(f"{text!r}: pick two scored rows (update and weights) first", code="app")
    return update, weights


def _num(value, places: int) -> str:
    return "" if value is None else f"{float(value):.{places}f}"


def score_table(run_dir: Path) -> tuple[str, list[list], list[tuple[str, str]], tuple[str | None, str | None]]:
    """(what to say, the table's rows, the rows as (label, value) choices, the default A and B values).
    A run without scores says how to make them."""
    from finetune.lock.checkpoints import list_checkpoints
    from finetune.media.scores import best_row, describe_setup, read_scores

    m, problem = runs.manifest(run_dir)
    if m is None:
        raise UserError(problem, code="app")
    scores = read_scores(run_dir, m["sha256"])
    if scores is None or not scores["rows"]:
        if not (m.get("data") or {}).get("val"):
            return (f"{run_dir.name} holds no clips out of training, so it cannot be scored: train with "
                    "data.val_clips=N (for example 8), then score the run with python -m infer.score"), [], [], (None, None)
        return (f"{run_dir.name} has no scores yet: press Score, or run\n  python -m infer.score run={run_dir}\n"
                "(validation loss and the quality score of the speech; add asr.model=<a Whisper> for WER and CER, "
                "speaker.model=<a speaker-verification model> for speaker similarity)"), [], [], (None, None)
    rows = scores["rows"]
    best, by = best_row(rows)
    setups = {name: n for n, name in enumerate(scores["setups"], 1)}
    present = list_checkpoints(run_dir)
    table, choices = [], []
    for r in rows:
        star = key(r) == key(best)
        table.append([BEST if star else "", r["update"], r["weights"], _num(r["val_loss"], 4), _num(r.get("wer"), 3),
                      _num(r.get("cer"), 3), _num(r.get("speaker_similarity"), 3), _num(r.get("quality"), 3),
                      setups.get(r["setup"]),
                      runs.when(r.get("scored"))])
        label = f"update {r['update']}, {r['weights']}" + (" (best)" if star else "") + \
            ("" if r["update"] in present else " (checkpoint gone)")
        choices.append((label, key(r)))
    other = [r for r in rows if key(r) != key(best)]
    second = next((r for r in other if r["update"] == best["update"]), other[-1] if other else best)
    held = len((scores.get("held_out") or {}).get("rows") or [])
    lines = [f"{len(rows)} scored rows ({held} held-out clips); {BEST} best: update {best['update']}, "
             f"{best['weights']} weights, by {BY.get(by, by)}"]
    lines += [describe_setup(n, scores["setups"][name]) for name, n in setups.items()]
    gone = sorted({r["update"] for r in rows} - set(present))
    if gone:
        lines.append(f"checkpoints no longer in the run: {', '.join(map(str, gone))}")
    return "\n".join(lines), table, choices, (key(best), key(second))
