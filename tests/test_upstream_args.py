"""The lock is complete by construction: every constructor argument of the installed upstream's backbones, CFM
and mel spectrogram is a schema key, recorded in the manifest with its default filled in, and passed explicitly
by the builder. An upstream that grows an argument is a failing test here, and a refusal for a user, never a
silently different model."""
import shutil
from dataclasses import fields

import pytest
import torch

from finetune.lock import builder
from finetune.lock import upstream
from finetune.lock.builder import BACKBONE_DERIVED, CFM_DERIVED, build_model, fingerprint, model_spec, unknown_args
from finetune.lock.upstream import upstream_args
from finetune.lock.errors import UserError
from finetune.lock.manifest import FORMAT, read_manifest
from finetune.lock.schema import MODEL, ArchConfig, Backbone, CfmConfig, MelConfig, kind_of, unseen_keys
from tests.conftest import finetune, infer
from bench.makers import VOCAB, spec_of
from tests.test_manifest import forge

AVG = "model.arch.text_embedding_average_upsampling"


def test_the_schema_knows_every_argument_of_the_installed_upstream():
    assert unknown_args() == []
    sections = builder._sections("DiT")
    # and holds nothing upstream does not take: each key is an argument of some class it describes
    backbones = set().union(*(upstream_args(builder._backbone_class(b.value)) for b in Backbone))
    assert {f.name for f in fields(ArchConfig)} <= backbones - set(BACKBONE_DERIVED)
    assert {f.name for f in fields(CfmConfig)} == set(upstream_args(sections["cfm"][0])) - set(CFM_DERIVED)
    mel = upstream_args(sections["mel"][0])
    assert {f.name: f.default for f in fields(MelConfig)} == mel  # the mel defaults are upstream's too


def test_an_argument_upstream_adds_is_a_failing_check_and_a_refusal(monkeypatch):
    from f5_tts.model.backbones.dit import DiT

    class NewDiT(DiT):
        def __init__(self, *, dim, text_mixing=False, **kwargs):  # what a next release might add
            super().__init__(dim=dim, **kwargs)

    monkeypatch.setattr(builder, "_backbone_class", lambda name: NewDiT if name == "DiT" else DiT)
    assert "NewDiT.text_mixing" in unknown_args()
    with pytest.raises(UserError, match=r"takes NewDiT.text_mixing, which this f5tune does not record.*1\.1\.22"):
        spec_of("f5tts_tiny")


def test_the_manifest_records_every_argument_with_upstreams_defaults():
    spec = spec_of("e2tts_tiny")
    unett = builder._backbone_class("UNetT")
    assert list(spec["arch"]) == [a for a in upstream_args(unett) if a not in BACKBONE_DERIVED]
    assert spec["arch"]["skip_connect_type"] == "concat" and spec["arch"]["dropout"] == 0.1  # filled, not left None
    assert spec["cfm"] == {"sigma": 0.0, "odeint_kwargs": {"method": "euler"}, "audio_drop_prob": 0.3,
                           "cond_drop_prob": 0.2, "frac_lengths_mask": [0.7, 1.0]}
    with pytest.raises(UserError, match="model.arch.skip_connect_type='add': DiT .* takes no such argument"):
        model_spec({**spec_of("f5tts_tiny"), "arch": {**spec_of("f5tts_tiny")["arch"], "skip_connect_type": "add"}},
                   VOCAB)


def test_the_builder_passes_every_recorded_argument(monkeypatch):
    """A recorded value reaches upstream's constructors even where it equals nothing upstream defaults to."""
    spec = spec_of("f5tts_tiny")
    spec = {**spec, "arch": {**spec["arch"], "dim_head": 16, "long_skip_connection": True},
            "cfm": {**spec["cfm"], "sigma": 0.25, "frac_lengths_mask": [0.5, 0.6]}}
    model = build_model(spec, VOCAB)
    assert model.transformer.transformer_blocks[0].attn.inner_dim == 2 * 16
    assert model.transformer.long_skip_connection is not None
    assert model.sigma == 0.25 and tuple(model.frac_lengths_mask) == (0.5, 0.6)


def test_unseen_keys_are_exactly_those_that_leave_the_shapes_alone():
    """`shapes=False` on a schema key says a checkpoint cannot show it: flipping it keeps every tensor's shape;
    flipping any other model key of a DiT that is a switch changes them."""
    base = spec_of("f5tts_tiny")
    flips = {"text_mask_padding": False, "text_embedding_average_upsampling": True, "pe_attn_head": 1,
             "attn_mask_enabled": True, "long_skip_connection": True, "conv_layers": 2, "qk_norm": "rms_norm"}
    with torch.device("meta"):
        before = fingerprint(build_model(base, VOCAB).state_dict())
        same = {k for k, v in flips.items()
                if fingerprint(build_model({**base, "arch": {**base["arch"], k: v}}, VOCAB).state_dict()) == before}
    assert same == set(unseen_keys())
    assert all(kind_of(f"model.arch.{k}") == MODEL for k in unseen_keys())


def test_a_manifest_from_another_upstream_is_refused_naming_the_argument_and_versions(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    forge(run, lambda b: b["model"]["arch"].update(text_mixing=True))
    with pytest.raises(UserError, match=r"model\.arch\.text_mixing: the manifest records this DiT argument, which "
                                        r"the installed f5-tts lacks \(the run used f5-tts 1\.1\.22, this is f5-tts "):
        read_manifest(run)
    def without_dim_head(b):
        del b["model"]["arch"]["text_mixing"], b["model"]["arch"]["dim_head"]

    forge(run, without_dim_head)
    with pytest.raises(UserError, match=r"model\.arch\.dim_head: the installed f5-tts's DiT takes this argument, "
                                        "which the manifest does not record"):
        read_manifest(run)
    forge(run, lambda b: b.update(format="f5tune-manifest/9"))
    with pytest.raises(UserError, match=f"format f5tune-manifest/9 was written by a newer f5tune .*{FORMAT}"):
        read_manifest(run)


def test_format_2_manifests_read_back_with_upstreams_arguments_filled(runs, tmp_path):
    run = shutil.copytree(runs["e2"], tmp_path / "old")

    def as_format_2(b):  # what format 2 wrote: the schema's keys, None for upstream's default, no cfm
        b["format"] = "f5tune-manifest/2"
        b["model"]["arch"] = {"dim": 64, "depth": 2, "heads": 2, "ff_mult": 2, "text_dim": None,
                              "text_mask_padding": False, "qk_norm": None, "conv_layers": None, "pe_attn_head": 1,
                              "attn_backend": None, "attn_mask_enabled": None, "checkpoint_activations": None}
        del b["model"]["cfm"]

    forge(run, as_format_2)
    body = read_manifest(run)
    assert body["model"] == spec_of("e2tts_tiny") | {"vocab": body["model"]["vocab"]}
    from finetune.lock.checkpoints import list_checkpoints, load_weights, save_checkpoint

    last = list_checkpoints(run)[4]  # bound to the manifest as written: bind a copy to the rewritten one
    save_checkpoint(run, 9, load_weights(last, "online"), load_weights(last, "ema"), body["sha256"])
    assert infer(f"run={run}", "nfe_step=1", "vocoder=griffinlim", f"out={tmp_path / 'o.wav'}").is_file()


def test_average_upsampling_trains_infers_and_is_locked(tmp_path):
    from finetune.__main__ import run as run_command

    run = finetune(tmp_path, "avg", "f5tts_tiny", f"{AVG}=true", "train.max_updates=2")
    manifest = read_manifest(run)
    assert manifest["model"]["arch"]["text_embedding_average_upsampling"] is True
    assert manifest["model"]["family"] == "F5-TTS v1 (average upsampling)"
    model = builder.build_model(manifest["model"], VOCAB)
    assert model.transformer.text_embed.average_upsampling is True  # upstream's flag, set by the manifest alone
    assert infer(f"run={run}", "nfe_step=1", "vocoder=griffinlim", f"out={tmp_path / 'a.wav'}").is_file()
    with pytest.raises(UserError, match=f"resume={run} refuses .*{AVG}: True -> False"):
        run_command([f"resume={run}", f"{AVG}=false", "train.max_updates=3"])
    with pytest.raises(UserError, match=f"pretrained={run} is a F5-TTS v1 \\(average upsampling\\).*"
                                        "text_embedding_average_upsampling: True -> False"):
        finetune(tmp_path, "plain", "f5tts_tiny", f"pretrained={run}")
    with pytest.raises(UserError, match=f"{AVG}=true needs model.arch.text_mask_padding=true"):
        finetune(tmp_path, "v0", "f5tts_v0_tiny", f"{AVG}=true")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "avg"]  # no other run folder


def test_pretrained_files_record_what_their_shapes_cannot_show(tmp_path):
    from bench.makers import tiny_state, write_layouts

    paths = write_layouts(tmp_path, tiny_state())
    run = finetune(tmp_path, "p", "f5tts_tiny", f"pretrained={paths['hub.safetensors']}", "train.max_updates=1")
    assumed = read_manifest(run)["pretrained"]["assumed"]
    assert assumed == {f"model.arch.{k}": spec_of("f5tts_tiny")["arch"][k] for k in unseen_keys()}


def test_a_release_with_broken_training_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(upstream, "upstream_version", lambda: "1.1.19")
    with pytest.raises(UserError, match=r"f5-tts 1\.1\.19 is installed, and its EMA copy fails.*f5-tts==1\.1\.22"):
        finetune(tmp_path, "broken", "f5tts_tiny")
    assert not (tmp_path / "broken").exists()
