import torch

from finetune.lock.builder import build_model, fingerprint
from bench.makers import VOCAB, spec_of


def meta_model(name: str):
    with torch.device("meta"):
        return build_model(spec_of(name), VOCAB)


def shape(model, key):
    return list(model.state_dict()[key].shape)


def test_bundled_vocab_gives_2546_rows():
    assert len(VOCAB) == 2545 and VOCAB[0] == " "


def test_e2tts_base_shapes():
    m = meta_model("e2tts")
    assert shape(m, "transformer.text_embed.text_embed.weight") == [2546, 100]
    assert shape(m, "transformer.input_embed.proj.weight") == [1024, 300]
    assert sum(p.numel() for p in m.parameters()) == 333_470_444


def test_f5tts_v1_base_shapes():
    m = meta_model("f5tts")
    assert shape(m, "transformer.text_embed.text_embed.weight") == [2546, 512]
    assert shape(m, "transformer.input_embed.proj.weight") == [1024, 712]
    assert sum(p.numel() for p in m.parameters()) == 337_096_804


def test_small_models_are_smaller():
    f5, e2 = meta_model("f5tts_small"), meta_model("e2tts_small")
    assert shape(f5, "transformer.input_embed.proj.weight") == [768, 712]
    assert shape(e2, "transformer.input_embed.proj.weight") == [768, 300]
    assert not any(k.startswith("transformer.transformer_blocks.18.") for k in f5.state_dict())


def test_v0_and_v1_share_shapes_but_are_built_differently():
    v0, v1 = meta_model("f5tts_v0"), meta_model("f5tts")
    assert fingerprint(v0.state_dict()) == fingerprint(v1.state_dict())  # no shape check can tell them apart
    assert v0.transformer.text_embed.mask_padding is False
    assert v1.transformer.text_embed.mask_padding is True
    assert v0.transformer.transformer_blocks[0].attn.processor.pe_attn_head == 1
    assert v1.transformer.transformer_blocks[0].attn.processor.pe_attn_head is None
    assert spec_of("f5tts_v0")["family"] == "F5-TTS v0" and spec_of("f5tts")["family"] == "F5-TTS v1"


def test_builder_refuses_a_vocab_that_differs_from_the_spec():
    import pytest

    from finetune.lock.errors import UserError

    with pytest.raises(UserError, match="2546 symbols"):
        with torch.device("meta"):
            build_model(spec_of("f5tts_tiny"), VOCAB + ["ŋ"])


def test_checkpoint_activations_pass_through_to_the_backbone():
    for flag in (True, False):
        spec = spec_of("f5tts_tiny")
        spec["arch"]["checkpoint_activations"] = flag
        assert build_model(spec, VOCAB).transformer.checkpoint_activations is flag


def test_skipping_init_changes_nothing_once_weights_are_read(tmp_path):
    """model_for builds without torch.nn.init and reads every tensor from the file: same model as a normal load."""
    from finetune.lock.checkpoints import load_weights, read_into, save_checkpoint

    torch.manual_seed(0)
    source = build_model(spec_of("e2tts_tiny"), VOCAB)
    online = {k: v.clone() for k, v in source.state_dict().items()}
    path = save_checkpoint(tmp_path, 1, online, source.state_dict(), "0" * 64)
    fast = build_model(spec_of("e2tts_tiny"), VOCAB, init_weights=False)
    read_into(fast, path, "ema")
    slow = build_model(spec_of("e2tts_tiny"), VOCAB)
    slow.load_state_dict(load_weights(path, "ema"))
    assert fast.state_dict().keys() == slow.state_dict().keys()
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in slow.state_dict().items())
    assert all(torch.equal(getattr(fast, "transformer").get_buffer(n), b)
               for n, b in slow.transformer.named_buffers())  # non-persistent buffers too
    assert torch.nn.init.normal_(torch.zeros(3)).abs().sum() > 0  # init restored after the build
