"""Audio samples at checkpoints: the EMA model speaks the reference clip's text again in its voice, as upstream's
trainer does, through the one sampling path inference uses (so `python -m infer` makes the same wav again)."""
from pathlib import Path

import torch

from .lock.checkpoints import ckpt_path, header
from .media.audio import load_audio, write_wav
from .media.sampling import record
from .media.speak import speak

CFG_STRENGTH, SWAY_SAMPLING_COEF = 2.0, -1.0  # upstream's trainer's (and inference's defaults)


class SampleWriter:
    """Built before the run folder is written, so a vocoder that cannot load stops the run first."""

    def __init__(self, cfg: dict, spec: dict, clip, device):
        from .media.vocoder import load_vocoder

        self.spec, vocoder = spec, cfg["vocoder"]
        self.vocoder = load_vocoder(vocoder["kind"], vocoder["path"], spec["mel"], device, vocoder["n_iter"],
                                    path_key="vocoder.path")
        self.clip = clip.with_mel()
        self.audio = load_audio(clip.audio, spec["mel"]["target_sample_rate"])
        self.settings = {"nfe_step": cfg["train"]["sample_nfe_step"], "cfg_strength": CFG_STRENGTH,
                         "sway_sampling_coef": SWAY_SAMPLING_COEF, "use_epss": cfg["train"]["sample_use_epss"],
                         "speed": 1.0}
        self.vocoder_record = {"vocoder": vocoder["kind"], "vocoder_path": vocoder["path"],
                               "vocoder_n_iter": vocoder["n_iter"]}

    def __call__(self, model, run_dir: Path, update: int, seed: int) -> tuple[Path, Path, torch.Tensor]:
        """The samples of the checkpoint just saved at `update` (its file says which run it is bound to)."""
        device = next(model.parameters()).device
        settings = {**self.settings, "seed": seed}
        # sampling seeds and draws (CPU and GPU generators): the training RNG must not move, or resume would drift
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            wav, _ = speak(model, self.spec, lambda: self.vocoder, self.audio, self.clip.text, self.clip.text,
                           settings, self.clip.where)
            ref = self.vocoder.decode(self.clip.mel.unsqueeze(0).to(device).float())[0].cpu()
        folder = Path(run_dir) / "samples"
        folder.mkdir(exist_ok=True)
        gen_path, ref_path = folder / f"update_{update:08d}_gen.wav", folder / f"update_{update:08d}_ref.wav"
        sr = self.spec["mel"]["target_sample_rate"]
        ckpt = ckpt_path(run_dir, update)
        source = dict(run=Path(run_dir).absolute(), checkpoint=ckpt.name, update=update, device=device,
                      manifest_sha256=header(ckpt)[1].get("manifest_sha256"), ref_audio=self.clip.audio,
                      ref_text=self.clip.text, **self.vocoder_record)
        write_wav(gen_path, wav, sr, record("checkpoint sample", weights="ema", gen_text=self.clip.text,
                                            **settings, **source))
        write_wav(ref_path, ref, sr, record(
            "checkpoint sample's reference: the clip's mel through the vocoder alone", weights=None, seed=None,
            nfe_step=None, cfg_strength=None, sway_sampling_coef=None, use_epss=None, speed=None, gen_text=None,
            **source))
        return gen_path, ref_path, wav
