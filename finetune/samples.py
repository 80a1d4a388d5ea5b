"""Audio samples at checkpoints: the EMA model speaks the reference clip's text again, as upstream's trainer does."""
from pathlib import Path

import torch

from .media.audio import write_wav
from .lock.checkpoints import ckpt_path, header
from .media.sampling import record

CFG_STRENGTH, SWAY_SAMPLING_COEF = 2.0, -1.0  # upstream's trainer's


class SampleWriter:
    """Built before the run folder is written, so a vocoder that cannot load stops the run first."""

    def __init__(self, cfg: dict, mel: dict, clip, device):
        from .media.vocoder import load_vocoder

        self.mel, vocoder = mel, cfg["vocoder"]
        self.vocoder = load_vocoder(vocoder["kind"], vocoder["path"], mel, device, vocoder["n_iter"],
                                    path_key="vocoder.path")
        self.clip, self.steps = clip.with_mel(), cfg["train"]["sample_nfe_step"]
        self.use_epss = cfg["train"]["sample_use_epss"]
        self.vocoder_record = {"vocoder": vocoder["kind"], "vocoder_path": vocoder["path"],
                               "vocoder_n_iter": vocoder["n_iter"]}

    def __call__(self, model, run_dir: Path, update: int, seed: int) -> tuple[Path, Path, torch.Tensor]:
        """The samples of the checkpoint just saved at `update` (its file says which run it is bound to)."""
        device = next(model.parameters()).device
        cond = self.clip.mel.T.unsqueeze(0).to(device)  # [1, frames, n_mel]
        frames = cond.shape[1]
        # sampling seeds and draws (CPU and GPU generators): the training RNG must not move, or resume would drift
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            out, _ = model.sample(cond=cond, text=[self.clip.tokens + [" "] + self.clip.tokens],
                                  duration=frames * 2, steps=self.steps, cfg_strength=CFG_STRENGTH,
                                  sway_sampling_coef=SWAY_SAMPLING_COEF, use_epss=self.use_epss, seed=seed)
            wav = self.vocoder.decode(out[:, frames:, :].permute(0, 2, 1).float())[0].cpu()
            ref = self.vocoder.decode(cond.permute(0, 2, 1).float())[0].cpu()
        folder = Path(run_dir) / "samples"
        folder.mkdir(exist_ok=True)
        gen_path, ref_path = folder / f"update_{update:08d}_gen.wav", folder / f"update_{update:08d}_ref.wav"
        sr = self.mel["target_sample_rate"]
        ckpt = ckpt_path(run_dir, update)
        source = dict(run=Path(run_dir).absolute(), checkpoint=ckpt.name, update=update, device=device,
                      manifest_sha256=header(ckpt)[1].get("manifest_sha256"), ref_audio=self.clip.audio,
                      ref_text=self.clip.text, **self.vocoder_record)
        # speed does not apply: the sample lasts twice the reference clip, whose text it speaks again after it
        write_wav(gen_path, wav, sr, record(
            "checkpoint sample", weights="ema", seed=seed, nfe_step=self.steps, cfg_strength=CFG_STRENGTH,
            sway_sampling_coef=SWAY_SAMPLING_COEF, use_epss=self.use_epss, speed=None, gen_text=self.clip.text,
            **source))
        write_wav(ref_path, ref, sr, record(
            "checkpoint sample's reference: the clip's mel through the vocoder alone", weights=None, seed=None,
            nfe_step=None, cfg_strength=None, sway_sampling_coef=None, use_epss=None, speed=None, gen_text=None,
            **source))
        return gen_path, ref_path, wav
