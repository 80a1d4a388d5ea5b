"""Metric loggers: wandb (online with credentials, offline otherwise, never prompting), tensorboard, none."""
import netrc
import os
from pathlib import Path


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class RunLogger:
    def __init__(self, kind: str, run_dir: Path, manifest: dict, project: str = "f5tune"):
        self.kind, self.backend = kind, None
        if kind == "wandb":
            import wandb

            mode = "online" if _wandb_credentials() else "offline"
            # the manifest is the run's config; it holds no environment, keys or tokens
            self.backend = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), mode=mode,
                                      config=manifest, settings=wandb.Settings(silent=True))
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
