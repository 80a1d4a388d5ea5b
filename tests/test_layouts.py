"""Pretrained checkpoints in every upstream layout, made here from a tiny model."""
import torch
from safetensors.torch import save_file

from finetune.lock.checkpoints import read_upstream
from tests.conftest import assert_user_error, cli, finetune
from tests.test_builder import VOCAB, spec_of

from finetune.lock.builder import build_model


def tiny_state(name="f5tts_tiny", seed=0):
    torch.manual_seed(seed)
    return build_model(spec_of(name), VOCAB).state_dict()


def ema_prefixed(sd):
    return {**{f"ema_model.{k}": v for k, v in sd.items()}, "initted": torch.tensor(True), "step": torch.tensor(7)}


def write_layouts(folder, sd):
    online = {k: v + 1 for k, v in sd.items()}  # distinct online weights: EMA must be the ones read
    files = {
        "trainer.pt": {"model_state_dict": online, "ema_model_state_dict": ema_prefixed(sd),
                       "optimizer_state_dict": {}, "scheduler_state_dict": {}, "update": 10},
        "ema_only.pt": {"ema_model_state_dict": ema_prefixed(sd)},
        "ddp.pt": {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "old.pt": {"ema_model_state_dict": {**ema_prefixed(sd),
                                            "ema_model.mel_spec.mel_stft.mel_scale.fb": torch.zeros(513, 100),
                                            "ema_model.mel_spec.mel_stft.spectrogram.window": torch.zeros(1024)}},
    }
    paths = {}
    for name, obj in files.items():
        paths[name] = folder / name
        torch.save(obj, paths[name])
    paths["hub.safetensors"] = folder / "hub.safetensors"
    save_file({k: v.contiguous() for k, v in ema_prefixed(sd).items()}, str(paths["hub.safetensors"]))
    return paths


def test_every_layout_reads_back_the_ema_weights(tmp_path):
    sd = tiny_state()
    for name, path in write_layouts(tmp_path, sd).items():
        got = read_upstream(path)
        assert got.keys() == sd.keys(), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name


def test_finetune_starts_from_each_layout(tmp_path):
    sd = tiny_state(seed=3)
    paths = write_layouts(tmp_path, sd)
    for name in ("trainer.pt", "hub.safetensors"):
        run = finetune(tmp_path / "runs", name.replace(".", "_"), "f5tts_tiny", f"pretrained={paths[name]}",
                       "train.max_updates=1", "optim.lr=0")
        from finetune.lock.checkpoints import list_checkpoints, load_weights

        online = load_weights(list_checkpoints(run)[1], "online")
        assert all(torch.equal(online[k], sd[k]) for k in sd), name  # lr=0: the weights are the pretrained ones
        assert f"file: {name}" in (run / "manifest.yaml").read_text()


def test_other_family_pretrained_stops_before_training(tmp_path):
    path = tmp_path / "e2.safetensors"
    save_file({k: v.contiguous() for k, v in ema_prefixed(tiny_state("e2tts_tiny")).items()}, str(path))
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path / 'runs'}", f"pretrained={path}")
    assert_user_error(r, "is an E2-TTS model", "model=f5tts_tiny is F5-TTS")
    assert not (tmp_path / "runs").exists()
