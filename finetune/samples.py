"""Audio samples at checkpoints: the EMA model speaks the reference clip's text again, as upstream's trainer does."""
from pathlib import Path

import torch

from .lock.audio import write_wav


class SampleWriter:
    """Built before the run folder is written, so a vocoder that cannot load stops the run first."""

    def __init__(self, cfg: dict, mel: dict, clip, device):
        from .lock.vocoder import load_vocoder

        self.mel = mel
        self.vocoder = load_vocoder(cfg["vocoder"]["kind"], cfg["vocoder"]["path"], mel, device,
                                    cfg["vocoder"]["n_iter"], path_key="vocoder.path")
        self.clip, self.steps = clip.with_mel(), cfg["train"]["sample_nfe_step"]

    def __call__(self, model, run_dir: Path, update: int, seed: int) -> tuple[Path, Path, torch.Tensor]:
        device = next(model.parameters()).device
        cond = self.clip.mel.T.unsqueeze(0).to(device)  # [1, frames, n_mel]
        frames = cond.shape[1]
        # sampling seeds and draws (CPU and GPU generators): the training RNG must not move, or resume would drift
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            out, _ = model.sample(cond=cond, text=[self.clip.tokens + [" "] + self.clip.tokens],
                                  duration=frames * 2, steps=self.steps, cfg_strength=2.0, sway_sampling_coef=-1.0,
                                  seed=seed)
            wav = self.vocoder.decode(out[:, frames:, :].permute(0, 2, 1).float())[0].cpu()
            ref = self.vocoder.decode(cond.permute(0, 2, 1).float())[0].cpu()
        folder = Path(run_dir) / "samples"
        folder.mkdir(exist_ok=True)
        gen_path, ref_path = folder / f"update_{update:08d}_gen.wav", folder / f"update_{update:08d}_ref.wav"
        sr = self.mel["target_sample_rate"]
        write_wav(gen_path, wav, sr)
        write_wav(ref_path, ref, sr)
        return gen_path, ref_path, wav
