"""Crash and concurrency trials, the figures behind README's "What it guarantees".

Kill trials: a tiny fine-tune is killed with SIGKILL at a random moment, uniform from its manifest's
appearance to half a second after its final checkpoint's, as timed on an uninterrupted run (a kill during
start-up leaves nothing to check; one late in the verified finish, only a complete run). Then every file it
left is checked (each listed checkpoint's header, tensor hashes and training state read whole; nothing
half-written under a checkpoint's name) and the run is resumed to its end, unless its last checkpoint is
already the final one; its final weights are compared with an uninterrupted run's, bit for bit.
Concurrency trials: two writers at once on one folder, each way they can meet; exactly one must proceed and
the other be refused in one line, with nothing of the first one's touched.
Usage: python bench/kill_trials.py [kill trials] [seed]
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
RUN = ["model=f5tts_tiny", "experiment=demo", "pretrained=null", "train.save_every=4"]


def run_args(root: Path, updates: int) -> list[str]:
    return [*RUN, f"train.max_updates={updates}", f"run.root={root}"]


def finetune(*args, wait=True):
    proc = subprocess.Popen([sys.executable, "-m", "finetune", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return proc
    out, err = proc.communicate()
    return proc.returncode, out, err


def intact(run: Path) -> tuple[int, int]:
    """(files checked, files damaged) among the checkpoints a killed run lists."""
    from finetune.lock.checkpoints import list_checkpoints, load_train_state, load_weights, state_path
    from finetune.lock.errors import UserError

    checked = damaged = 0
    for update, path in list_checkpoints(run).items():
        for read in (lambda: load_weights(path, "ema"), lambda: load_weights(path, "online"),
                     lambda: load_train_state(state_path(run, update))):
            checked += 1
            try:
                read()
            except UserError:
                damaged += 1
    return checked, damaged


def final_weights(run: Path, updates: int) -> dict:
    from finetune.lock.checkpoints import list_checkpoints, load_weights

    last = list_checkpoints(run)[updates]
    return {w: load_weights(last, w) for w in ("ema", "online")}


def same(a: dict, b: dict) -> bool:
    import torch

    return all(a[w].keys() == b[w].keys() and all(torch.equal(a[w][k], b[w][k]) for k in a[w]) for w in a)


def kill_trials(root: Path, n: int, rng: random.Random, updates: int) -> dict:
    from finetune.lock.checkpoints import list_checkpoints

    started = time.monotonic()
    proc = finetune(*run_args(root, updates), "run.name=reference", wait=False)
    marks = []
    ref = root / "reference"
    for path in (ref / "manifest.yaml", ref / "checkpoints" / f"model_{updates:08d}.safetensors"):
        while not path.exists() and proc.poll() is None:
            time.sleep(0.02)
        marks.append(time.monotonic() - started)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    folder, span = marks[0], marks[1] + 0.5  # to just after the final save: training, saves and the finish's start
    reference = final_weights(root / "reference", updates)
    totals = {"trials": 0, "files checked": 0, "damaged files": 0, "resumed": 0, "already complete": 0,
              "bit-identical": 0, "refused": 0}
    for i in range(n):
        proc = finetune(*run_args(root, updates), f"run.name=t{i}", wait=False)
        time.sleep(rng.uniform(folder, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run = root / f"t{i}"
        totals["trials"] += 1
        if not (run / "manifest.yaml").exists():  # killed before the folder was written: nothing to resume
            continue
        checked, damaged = intact(run)
        totals["files checked"] += checked
        totals["damaged files"] += damaged
        if not damaged and updates in list_checkpoints(run):  # killed after its final save: nothing left to train
            totals["already complete"] += 1
            totals["bit-identical"] += same(final_weights(run, updates), reference)
            continue
        code, _, err = finetune(f"resume={run}")
        if code != 0:
            totals["refused"] += 1
            print(f"trial {i}: resume refused: {err.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        totals["resumed"] += 1
        totals["bit-identical"] += same(final_weights(run, updates), reference)
    return totals


def concurrency_trials(root: Path, updates: int) -> list[tuple[str, bool]]:
    results = []
    code, _, err = finetune(*run_args(root, 4), "run.name=base")
    assert code == 0, err[-2000:]

    from finetune.lock.files import holder

    def race(label, first, second):
        a = finetune(*first, wait=False)
        deadline = time.monotonic() + 120
        while holder(root / "base") is None and time.monotonic() < deadline:  # the first holds the folder
            time.sleep(0.05)
        b_code, _, b_err = finetune(*second)
        a.wait()
        refused = b_code == 2 and "in use by pid" in b_err and "Traceback" not in b_err
        results.append((label, refused and a.returncode == 0))

    race("resume while the run trains", [f"resume={root / 'base'}", "train.max_updates=400"],
         [f"resume={root / 'base'}", "train.max_updates=500"])
    race("two resumes at once", [f"resume={root / 'base'}", "train.max_updates=800"],
         [f"resume={root / 'base'}", "train.max_updates=801"])
    a, b = (finetune(*run_args(root, updates), "run.name=twin", wait=False) for _ in range(2))
    codes = sorted(p.wait() for p in (a, b))
    results.append(("two starts of one run name", codes == [0, 2]))
    return results


def main(n: int = 20, seed: int = 0, races: bool = True, updates: int = 24) -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        totals = kill_trials(Path(tmp) / "kills", n, random.Random(seed), updates)
        print("kill trials: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        for label, ok in concurrency_trials(Path(tmp) / "races", updates) if races else ():
            print(f"concurrency: {label}: {'one proceeded, the other was refused' if ok else 'FAILED'}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
