"""End to end through the real CLIs: tiny fine-tune -> run folder -> inference, and the refusals."""
import os
import shutil

import soundfile as sf
import yaml

from finetune.lock.checkpoints import header, list_checkpoints
from tests.conftest import assert_user_error, cli, finetune
from tests.make_data import write_vocos


def test_run_folder_contents(runs):
    for family, run in runs.items():
        names = {p.name for p in run.iterdir()}
        assert {"manifest.yaml", "vocab.txt", "reference.wav", "train.log", "checkpoints"} <= names
        assert sorted(list_checkpoints(run)) == [2, 4]
        assert (run / "checkpoints" / "state_00000004.pt").is_file()
        manifest = yaml.safe_load((run / "manifest.yaml").read_text())
        shapes, meta = header(list_checkpoints(run)[4])
        assert meta["manifest_sha256"] == manifest["sha256"] and meta["update"] == "4"
        assert {k.split(".", 1)[0] for k in shapes} == {"ema", "online"}
        assert manifest["model"]["backbone"] == {"f5": "DiT", "e2": "UNetT"}[family]
        assert manifest["model"]["vocab"]["size"] == 2545 and manifest["model"]["text_num_embeds"] == 2545
        assert manifest["config"]["train"]["max_updates"] == 4
        assert manifest["versions"]["f5-tts"] == "1.1.22"
        assert "text_mask_padding" in manifest["model"]["arch"] and "pe_attn_head" in manifest["model"]["arch"]
        assert len(manifest["fingerprint"]) > 10


def test_no_secrets_in_manifest(tmp_path):
    os.environ["WANDB_API_KEY_FOR_TEST"] = "sekret-123"  # nothing from the environment is recorded
    try:
        run = finetune(tmp_path, "s", "f5tts_tiny", "train.max_updates=1")
    finally:
        del os.environ["WANDB_API_KEY_FOR_TEST"]
    assert "sekret-123" not in (run / "manifest.yaml").read_text()


def test_inference_writes_a_plausible_wav(runs, tmp_path):
    for family, run in runs.items():
        out = tmp_path / f"{family}.wav"
        text = "Hello there, this is a test."
        r = cli("infer", f"run={run}", f"gen_text={text}", f"out={out}", "nfe_step=4")
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().splitlines()[-1] == str(out)
        info = sf.info(str(out))
        assert info.samplerate == 24000 and info.channels == 1
        # upstream's duration rule: the reference clip's seconds per byte of text, applied to the new text
        ref = sf.info(str(run / "reference.wav")).duration
        ref_text = yaml.safe_load((run / "manifest.yaml").read_text())["reference"]["text"]
        expected = ref / len((ref_text + " ").encode()) * len(text.encode())
        assert abs(info.duration - expected) < 0.1, (info.duration, expected)


def test_inference_with_only_run_and_a_chosen_checkpoint(runs):
    r = cli("infer", f"run={runs['f5']}", "ckpt=2", "nfe_step=2", "weights=online")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()[-1]
    assert out.startswith(str(runs["f5"] / "samples")) and "model_00000002" in out
    assert sf.info(out).duration > 1.0


def test_model_override_at_inference_is_refused(runs):
    for arg in ("model=e2tts", "model.arch.dim=128", "+arch.depth=3", "vocab=/tmp/v.txt"):
        assert_user_error(cli("infer", f"run={runs['f5']}", arg), "manifest.yaml")


def test_edited_manifest_is_refused(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "edited")
    path = run / "manifest.yaml"
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace("text_mask_padding: true", "text_mask_padding: false"))
    assert_user_error(cli("infer", f"run={run}"), "does not match", "edited")


def test_checkpoint_from_another_run_is_refused_naming_both_runs(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "mixed")
    shutil.copy(list_checkpoints(runs["e2"])[4], run / "checkpoints" / "model_00000009.safetensors")
    assert_user_error(cli("infer", f"run={run}"), "belongs to run 'e2'", "not to run 'mixed'")


def unbound_copy(src, dst):
    """The same tensors with no metadata: a file that nothing binds to a run."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(src)), str(dst))


def test_unbound_checkpoint_needs_explicit_consent(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "foreign")
    unbound_copy(list_checkpoints(runs["f5"])[4], run / "checkpoints" / "model_00000009.safetensors")
    assert_user_error(cli("infer", f"run={run}", "nfe_step=2"), "no run binding", "allow_foreign=true")
    r = cli("infer", f"run={run}", "nfe_step=2", "allow_foreign=true")
    assert r.returncode == 0, r.stderr[-3000:]


def test_checkpoint_of_the_other_family_is_refused_naming_both(runs, tmp_path):
    for this, other, words in (("f5", "e2", ("is an E2-TTS model", "the run", "is F5-TTS")),
                               ("e2", "f5", ("is an F5-TTS model", "is E2-TTS"))):
        run = shutil.copytree(runs[this], tmp_path / f"{this}-with-{other}")
        unbound_copy(list_checkpoints(runs[other])[4], run / "checkpoints" / "model_00000009.safetensors")
        err = assert_user_error(cli("infer", f"run={run}", "allow_foreign=true"), "does not fit", *words)
        assert "transformer.input_embed.proj.weight: expected" in err


def test_same_run_name_is_refused_and_the_run_untouched(runs):
    before = {p: p.stat().st_mtime_ns for p in runs["f5"].rglob("*")}
    r = cli("finetune", "model=f5tts_tiny", f"run.root={runs['f5'].parent}", "run.name=f5", "data=demo",
            "train=demo", "pretrained=null", "train.max_updates=1")
    assert_user_error(r, "already exists")
    assert {p: p.stat().st_mtime_ns for p in runs["f5"].rglob("*")} == before


def test_bad_inputs_give_one_line_errors(runs, tmp_path):
    assert_user_error(cli("infer", f"run={tmp_path / 'none'}"), "no such run folder")
    assert_user_error(cli("infer", f"run={runs['f5']}", "ref_audio=/nonexistent.wav", "ref_text=hi"), "not found")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    assert_user_error(cli("infer", f"run={runs['f5']}", f"ref_audio={bad}", "ref_text=hi"), "cannot read audio")
    assert_user_error(cli("finetune", "model=f5tts_huge"), "unknown model")
    assert_user_error(cli("infer", f"run={runs['f5']}", "speed=0"), "speed must be above 0")
    assert_user_error(cli("infer", f"run={runs['f5']}", "nfe_step=0"), "nfe_step 1 or more")
    assert_user_error(cli("infer", f"run={runs['f5']}", f"out={tmp_path}"), "is a folder")
    # HF_HUB_OFFLINE=1 (conftest): the hub is never contacted; the cache misses and the message says what to pass
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "pretrained=hf://SWivid/F5-TTS/x/model.safetensors")
    assert_user_error(r, "pretrained=/path/to/file")
    assert not any(tmp_path.glob("f5tts_tiny-*"))


def test_local_vocos_folder_and_loggers(runs, tmp_path):
    """A vocos folder as upstream expects it (config.yaml + pytorch_model.bin), made here with a tiny net."""
    folder = write_vocos(tmp_path / "vocos", dim=16, intermediate_dim=32, num_layers=1)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    out = tmp_path / "v.wav"
    r = cli("infer", f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}", "nfe_step=2", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sf.info(str(out)).samplerate == 24000
    config["head"]["class_path"] = "os.system"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert_user_error(cli("infer", f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}"), "head must be")

    for kind, marker in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        run = finetune(tmp_path, kind, "f5tts_tiny", f"logger={kind}", "train.max_updates=3", "train.log_every=1",
                       "train.save_every=1", "train.keep_last_n=2", "train.log_samples=true",
                       "train.sample_nfe_step=2")
        assert any((run / marker).rglob("*")), kind
        assert sorted(p.name for p in (run / "samples").iterdir()) == [
            f"update_{u:08d}_{w}.wav" for u in (1, 2, 3) for w in ("gen", "ref")]
        assert sf.info(str(run / "samples" / "update_00000003_gen.wav")).duration > 1
        assert sorted(list_checkpoints(run)) == [2, 3]  # pruned after each complete save
        assert sorted(p.name for p in (run / "checkpoints").glob("state_*")) == ["state_00000002.pt", "state_00000003.pt"]
        assert (run / "train.log").read_text().count("grad_norm") == 3
    assert any(p.suffix == ".wav" for p in (tmp_path / "wandb" / "wandb").rglob("media/audio/**/*"))
    # wandb's offline record of the run (protobuf): the manifest as its config (its hash), the manifest +
    # vocab artifact, and history items keyed loss, lr, grad_norm (a key is field 2: 0x12, length, bytes)
    records = b"".join(f.read_bytes() for f in (tmp_path / "wandb" / "wandb").rglob("run-*.wandb"))
    manifest = yaml.safe_load((tmp_path / "wandb" / "manifest.yaml").read_text())
    for needle in (manifest["sha256"], "wandb-manifest", "manifest.yaml", "vocab.txt"):
        assert needle.encode() in records, needle
    for key in ("loss", "lr", "grad_norm"):
        assert bytes([0x12, len(key)]) + key.encode() in records, key
