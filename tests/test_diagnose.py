"""Each mismatch gets a plain-words diagnosis; built from real model fingerprints on the meta device."""
import pytest
import torch

from finetune.lock.builder import build_model, fingerprint, model_spec
from finetune.lock.diagnose import arch_of, check_fits, diagnose
from finetune.lock.errors import UserError
from finetune.lock.layouts import weight_keys
from bench.makers import VOCAB, spec_of


def fp(name, vocab=VOCAB, **changes):
    spec = spec_of(name)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        spec[section][field] = value
    if vocab is not VOCAB:
        spec = {**spec, "vocab": model_spec({**spec, "arch": spec["arch"]}, vocab)["vocab"]}
    with torch.device("meta"):
        return fingerprint(build_model(spec, vocab).state_dict())


def test_e2_into_f5_and_back():
    f5, e2 = fp("f5tts"), fp("e2tts")
    msg = diagnose(f5, e2)
    assert "E2-TTS model (UNetT, 100-d text embedding, 300-input projection)" in msg
    assert "the run is F5-TTS (DiT, 512-d, 712)" in msg
    msg = diagnose(e2, f5)
    assert "F5-TTS model (DiT, 512-d text embedding, 712-input projection)" in msg and "E2-TTS (UNetT" in msg


def test_base_vs_small():
    msg = diagnose(fp("f5tts"), fp("f5tts_small"))
    assert "dim 768, depth 18, heads 12" in msg and "dim 1024, depth 22, heads 16" in msg


def test_ff_mult_and_heads_are_read_from_shapes():
    a = arch_of(fp("e2tts"))
    assert (a["dim"], a["depth"], a["heads"], a["ff_mult"], a["text_dim"]) == (1024, 24, 16, 4, 100)
    a = arch_of(fp("f5tts"))
    assert (a["depth"], a["ff_mult"], a["conv_layers"], a["vocab_rows"]) == (22, 2, 4, 2546)


def test_text_dim_conv_layers_and_mel_channels():
    assert "64-d text embedding" in diagnose(fp("f5tts_tiny"), fp("f5tts_tiny", arch__text_dim=64))
    assert "3 text conv layers" in diagnose(fp("f5tts_tiny"), fp("f5tts_tiny", arch__conv_layers=3))
    assert "80 mel channels" in diagnose(fp("f5tts_tiny"), fp("f5tts_tiny", mel__n_mel_channels=80))


def test_extended_vocab():
    extended = VOCAB + [f"x{i}" for i in range(40)]
    msg = diagnose(fp("f5tts"), fp("f5tts", vocab=extended))
    assert "checkpoint has 2586 text-embedding rows, the run's vocab gives 2546" in msg
    assert "extended vocab" in msg and "use the vocab it was trained with" in msg


def test_every_layouts_prefixes_and_stale_buffers_are_read_the_same_way():
    """One reading of keys for every layout: a `module.` prefix (DDP), `ema_model.` and the EMA counters,
    and the mel buffers of pre-Nov-2024 files all come out as the model's keys."""
    tiny = fp("f5tts_tiny")
    stale = {"mel_spec.mel_stft.mel_scale.fb": "float32[513, 100]", "mel_spec.mel_stft.spectrogram.window": "float32[1024]"}
    for keys in ({f"module.{k}": v for k, v in tiny.items()},
                 {**{f"ema_model.{k}": v for k, v in tiny.items()}, "initted": "bool[]", "step": "int64[]",
                  **{f"ema_model.{k}": v for k, v in stale.items()}},
                 {**{f"online.module.{k}": v for k, v in tiny.items()}, **{f"ema.{k}": v for k, v in tiny.items()}}):
        mapping = weight_keys(keys, "ema")
        assert mapping.keys() == tiny.keys()
        check_fits(tiny, {name: keys[k] for name, k in mapping.items()}, "x", "the run")


def test_check_fits_prints_a_table_and_passes_a_fit():
    check_fits(fp("f5tts_tiny"), fp("f5tts_v0_tiny"), "x", "the run")  # same shapes: nothing to say
    with pytest.raises(UserError) as e:
        check_fits(fp("f5tts"), fp("f5tts_small"), "ckpt.safetensors", "the run")
    text = str(e.value)
    assert text.startswith("ckpt.safetensors does not fit the run: a different size")
    assert "missing keys: transformer.transformer_blocks.18.*" in text
    assert "more tensors of other shapes" in text and len(text.splitlines()) <= 16
