import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Nothing in the suite may reach the hub or prompt for a wandb login.
OFFLINE = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
os.environ.update(OFFLINE)  # in-process tests too; set before anything imports huggingface_hub
TINY = ["data=demo", "train=demo", "optim=demo", "vocoder=griffinlim", "pretrained=null",
        "train.max_updates=4", "train.save_every=2"]


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=600)


def finetune(root: Path, name: str, model: str, *extra: str) -> Path:
    r = cli("finetune", f"model={model}", f"run.root={root}", f"run.name={name}", *TINY, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"run: {root / name}"
    return root / name


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """A refusal: non-zero exit, an `error:` line naming the problem, no traceback."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "error:" in r.stderr, r.stderr[-3000:]
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr[-3000:])
    return r.stderr


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """One tiny fine-tune per family, shared by the tests that only read them."""
    root = tmp_path_factory.mktemp("runs")
    return {"f5": finetune(root, "f5", "f5tts_tiny"), "e2": finetune(root, "e2", "e2tts_tiny")}
