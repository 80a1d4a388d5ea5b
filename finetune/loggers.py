"""Metric loggers: wandb (as the environment says; offline when its server cannot be reached; never
prompting), tensorboard, none."""
import netrc
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from .lock.errors import first_line


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why wandb's server cannot be reached (None when a connection opens): a compute node behind a
    firewall would otherwise wait 90 s in wandb.init and then crash the run."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return None
    except OSError as e:
        return e.strerror or type(e).__name__


def wandb_mode() -> str:
    """The mode for wandb.init: WANDB_MODE's when it says offline, disabled or dryrun (passed on explicitly,
    as wandb reads its environment only once per process); online only with credentials and a server that
    answers, offline otherwise (with one warning line)."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env and env != "online":
        return env
    if not _wandb_credentials():
        return "offline"
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    reason = _unreachable(url)
    if reason:
        print(f"warning: wandb: cannot reach {url} ({reason}); logging offline (wandb sync <run>/wandb later)",
              file=sys.stderr)
        return "offline"
    return "online"


class RunLogger:
    def __init__(self, kind: str, run_dir: Path, manifest: dict, project: str = "f5tune"):
        self.kind, self.backend = kind, None
        if kind == "wandb":
            import wandb

            # the manifest is the run's config; it holds no environment, keys or tokens
            args = dict(project=project, name=run_dir.name, dir=str(run_dir), config=manifest,
                        settings=wandb.Settings(silent=True))
            try:
                self.backend = wandb.init(**args, mode=wandb_mode())
            except wandb.errors.Error as e:  # a rejected key, a server error: the run goes on offline
                print(f"warning: wandb: {first_line(e, 150)}; logging offline", file=sys.stderr)
                self.backend = wandb.init(**args, mode="offline")
            if self.backend.disabled:
                return
            artifact = wandb.Artifact(f"{run_dir.name}-manifest", type="manifest")
            artifact.add_file(str(run_dir / "manifest.yaml"))
            artifact.add_file(str(run_dir / "vocab.txt"))
            self.backend.log_artifact(artifact)
        elif kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.backend = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict, step: int) -> None:
        if self.kind == "wandb":
            self.backend.log(metrics, step=step)
        elif self.kind == "tensorboard":
            for k, v in metrics.items():
                self.backend.add_scalar(k, v, step)

    def audio(self, files: dict, step: int) -> None:
        if self.kind == "wandb":
            import wandb

            self.backend.log({k: wandb.Audio(str(v)) for k, v in files.items()}, step=step)
        elif self.kind == "tensorboard":
            import soundfile as sf
            import torch

            for k, v in files.items():
                data, sr = sf.read(str(v), dtype="float32")
                self.backend.add_audio(k, torch.from_numpy(data).unsqueeze(0), step, sample_rate=sr)

    def close(self) -> None:
        if self.backend is not None:
            (self.backend.finish if self.kind == "wandb" else self.backend.close)()
            self.backend = None
