"""End to end: tiny fine-tune -> run folder -> inference, loggers, samples, and the CLIs' exit contract."""
import os
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import yaml

from finetune.lock.checkpoints import header, list_checkpoints
from finetune.lock.errors import UserError
from finetune.lock.manifest import FORMAT
from tests import preloaded
from tests.conftest import TINY, assert_user_error, cli, finetune, infer
from bench.makers import write_vocos


def test_run_folder_contents(runs):
    for family, run in runs.items():
        names = {p.name for p in run.iterdir()}
        assert {"manifest.yaml", "vocab.txt", "reference.wav", "train.log", "checkpoints", "metrics.jsonl",
                "status.json"} <= names
        assert sorted(list_checkpoints(run)) == [2, 4]
        assert (run / "checkpoints" / "state_00000004.pt").is_file()
        manifest = yaml.safe_load((run / "manifest.yaml").read_text())
        assert manifest["format"] == FORMAT
        shapes, meta = header(list_checkpoints(run)[4])
        assert meta["manifest_sha256"] == manifest["sha256"] and meta["update"] == "4"
        assert len(meta["ema_sha256"]) == 64 and len(meta["online_sha256"]) == 64
        assert {k.split(".", 1)[0] for k in shapes} == {"ema", "online"}
        assert manifest["model"]["backbone"] == {"f5": "DiT", "e2": "UNetT"}[family]
        assert manifest["model"]["vocab"]["size"] == 2545 and "text_num_embeds" not in manifest["model"]
        assert "vocoder" not in manifest and set(manifest["data"]) == {"path", "sha256", "clips", "hours"}
        assert manifest["config"]["train"]["max_updates"] == 4 and manifest["config"]["run"]["name"] == family
        assert manifest["versions"]["f5-tts"] == "1.1.22"
        assert "text_mask_padding" in manifest["model"]["arch"] and "pe_attn_head" in manifest["model"]["arch"]
        assert len(manifest["fingerprint"]) > 10
        status = yaml.safe_load((run / "status.json").read_text())
        assert (status["state"], status["update"], status["planned"]) == ("finished", 4, 4)


def test_no_secrets_in_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY_FOR_TEST", "sekret-123")  # nothing from the environment is recorded
    run = finetune(tmp_path, "s", "f5tts_tiny", "train.max_updates=1")
    assert not [p for p in run.rglob("*") if p.is_file() and b"sekret-123" in p.read_bytes()]


def test_inference_writes_a_plausible_wav(runs, tmp_path):
    for family, run in runs.items():
        out = tmp_path / f"{family}.wav"
        text = "Hello there, this is a test."
        assert infer(f"run={run}", f"gen_text={text}", f"out={out}", "nfe_step=4") == out
        info = sf.info(str(out))
        assert info.samplerate == 24000 and info.channels == 1
        # upstream's duration rule: the reference clip's seconds per byte of text, applied to the new text
        ref = sf.info(str(run / "reference.wav")).duration
        ref_text = yaml.safe_load((run / "manifest.yaml").read_text())["reference"]["text"]
        expected = ref / len((ref_text + " ").encode()) * len(text.encode())
        assert abs(info.duration - expected) < 0.1, (info.duration, expected)


def test_long_text_is_spoken_in_pieces_and_joined(runs, tmp_path):
    """Text longer than one pass (here 6 sentences make 2 pieces) is cut at sentence ends, as upstream does,
    instead of overflowing the model's positions (a 10,000-character text ended in a traceback before)."""
    out = tmp_path / "long.wav"
    text = " ".join(["This sentence is one of many that make a long text."] * 6)
    infer(f"run={runs['f5']}", f"gen_text={text}", f"out={out}", "nfe_step=1")
    one = tmp_path / "one.wav"
    infer(f"run={runs['f5']}", "gen_text=This sentence is one of many that make a long text.", f"out={one}", "nfe_step=1")
    assert sf.info(str(out)).duration > 4 * sf.info(str(one)).duration


def test_inference_with_only_run_and_a_chosen_checkpoint(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    out = infer(f"run={run}", "ckpt=2", "nfe_step=2", "weights=online")
    assert out.parent == run / "samples" and "model_00000002" in out.name
    assert sf.info(str(out)).duration > 1.0


def test_model_override_at_inference_is_refused(runs):
    for arg in ("model=e2tts", "model.arch.dim=128", "+arch.depth=3", "vocab=/tmp/v.txt", "pretrained=x.pt"):
        with pytest.raises(UserError, match="manifest.yaml"):
            infer(f"run={runs['f5']}", arg)


def test_edited_manifest_is_refused(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "edited")
    path = run / "manifest.yaml"
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace("text_mask_padding: true", "text_mask_padding: false"))
    with pytest.raises(UserError, match="does not match.*edited"):
        infer(f"run={run}")


def test_checkpoint_from_another_run_is_refused_naming_both_runs(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "mixed")
    shutil.copy(list_checkpoints(runs["e2"])[4], run / "checkpoints" / "model_00000009.safetensors")
    with pytest.raises(UserError, match="belongs to run 'e2'.*not to run 'mixed'"):
        infer(f"run={run}")


def unbound_copy(src, dst):
    """The same tensors with no metadata: a file that nothing binds to a run."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(src)), str(dst))


def test_unbound_checkpoint_needs_explicit_consent(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "foreign")
    unbound_copy(list_checkpoints(runs["f5"])[4], run / "checkpoints" / "model_00000009.safetensors")
    with pytest.raises(UserError, match="no run binding.*allow_foreign=true"):
        infer(f"run={run}", "nfe_step=2")
    assert infer(f"run={run}", "nfe_step=2", "allow_foreign=true").is_file()


def test_checkpoint_of_the_other_family_is_refused_naming_both(runs, tmp_path):
    for this, other, words in (("f5", "e2", ("is an E2-TTS model", "the run", "is F5-TTS")),
                               ("e2", "f5", ("is an F5-TTS model", "is E2-TTS"))):
        run = shutil.copytree(runs[this], tmp_path / f"{this}-with-{other}")
        unbound_copy(list_checkpoints(runs[other])[4], run / "checkpoints" / "model_00000009.safetensors")
        with pytest.raises(UserError) as e:
            infer(f"run={run}", "allow_foreign=true")
        for needle in ("does not fit", *words, "transformer.input_embed.proj.weight: expected"):
            assert needle in str(e.value)


def test_same_run_name_is_refused_and_the_run_untouched(runs):
    before = {p: p.stat().st_mtime_ns for p in runs["f5"].rglob("*")}
    with pytest.raises(UserError, match="already exists"):
        finetune(runs["f5"].parent, "f5", "f5tts_tiny", "train.max_updates=1")
    assert {p: p.stat().st_mtime_ns for p in runs["f5"].rglob("*")} == before


def test_the_clis_refuse_with_one_error_line_and_status_2(runs, tmp_path):
    """One process per entry point: the exit status and the single `error:` line (the rest of the
    refusals are checked in-process)."""
    assert_user_error(cli("finetune", "model=f5tts_huge"), "unknown model")
    assert_user_error(cli("finetune", f"resume={tmp_path / 'nothing'}"), "no such run folder")
    assert_user_error(cli("infer", f"run={runs['f5']}", "speed=0"), "speed=0.0: must be above 0")
    assert_user_error(cli("infer.inspect", str(tmp_path / "nothing")), "no such file")
    # HF_HUB_OFFLINE=1 (conftest): the hub is never contacted; the cache misses and the message says what to pass
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "pretrained=hf://SWivid/F5-TTS/x/model.safetensors")
    assert_user_error(r, "pretrained=/path/to/file")
    assert not any(tmp_path.glob("f5tts_tiny-*"))


def test_the_hub_is_offline_in_the_tests_and_their_processes():
    """CI has no network: huggingface_hub (and transformers through it) must read HF_HUB_OFFLINE as set,
    in this process (conftest sets it before anything imports the hub) and in every process a test starts:
    started, or forked from the preloaded server (which read it when it imported the hub)."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    for start in (subprocess.run, preloaded.run):
        child = start([sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"],
                      env=os.environ, capture_output=True, text=True, timeout=120)
        assert child.stdout.strip() == "True", (start, child.stderr[-2000:])


def test_a_plain_cli_run_prints_its_folder_last(tmp_path):
    """Started as a user starts them (the other tools the tests start are forked from a preloaded process)."""
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "run.name=cli", *TINY, "train.max_updates=1",
            fresh=True)
    assert r.returncode == 0, r.stderr[-3000:]
    *_, verified, last = r.stdout.strip().splitlines()
    assert last == f"run: {tmp_path / 'cli'}" and verified.startswith("verified: ")
    r = cli("infer", f"run={tmp_path / 'cli'}", "nfe_step=1", f"out={tmp_path / 'cli.wav'}", fresh=True)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == str(tmp_path / "cli.wav"), r.stderr[-2000:]


def test_local_vocos_folder(runs, tmp_path):
    """A vocos folder as upstream expects it (config.yaml + pytorch_model.bin), made here with a tiny net."""
    folder = write_vocos(tmp_path / "vocos", dim=16, intermediate_dim=32, num_layers=1)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    out = tmp_path / "v.wav"
    infer(f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}", "nfe_step=2", f"out={out}")
    assert sf.info(str(out)).samplerate == 24000
    config["head"]["class_path"] = "os.system"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match="head must be"):
        infer(f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}")


@pytest.mark.parametrize("kind", ["wandb", "tensorboard"])
def test_loggers_samples_metrics_and_pruning(tmp_path, kind):
    run = finetune(tmp_path, kind, "f5tts_tiny", f"logger={kind}", "train.max_updates=3", "train.log_every=1",
                   "train.save_every=1", "train.keep_last_n=2", "train.log_samples=true", "train.sample_nfe_step=2")
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        f"update_{u:08d}_{w}.wav" for u in (1, 2, 3) for w in ("gen", "ref")]
    assert sf.info(str(run / "samples" / "update_00000003_gen.wav")).duration > 1
    assert sorted(list_checkpoints(run)) == [2, 3]  # pruned after each complete save
    assert sorted(p.name for p in (run / "checkpoints").glob("state_*")) == ["state_00000002.pt", "state_00000003.pt"]
    assert (run / "train.log").read_text().count("grad_norm") == 3
    metrics = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in metrics] == [1, 2, 3]
    assert all({"loss", "lr", "grad_norm", "seconds", "memory_mb"} <= m.keys() and m["memory_mb"] > 0 for m in metrics)
    if kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard")).Reload()
        assert {"loss", "lr", "grad_norm", "memory_mb"} <= set(events.Tags()["scalars"])
        assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
        assert len(events.Tags()["audio"]) == 2
        return
    # wandb's offline record, read with wandb's own protobuf schema: the manifest as the run's config, the
    # manifest + vocab artifact, the history, and the sample audio
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    records = wandb_records(next((run / "wandb").glob("offline-run-*/run-*.wandb")))
    config = {item.key: item.value_json for item in records["run"][0].run.config.update}
    assert yaml.safe_load(config["sha256"]) == manifest["sha256"]
    (artifact,) = [r.artifact for r in records["artifact"]]
    assert artifact.type == "manifest" and {c.path for c in artifact.manifest.contents} == {"manifest.yaml", "vocab.txt"}
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item} for r in records["history"]]
    assert [float(h["loss"]) for h in history] == [m["loss"] for m in metrics]
    assert all(h["sample/generated/_type"] == '"audio-file"' for h in history)


def test_wandb_honours_its_environment_and_falls_back_offline(tmp_path, monkeypatch, capsys):
    from finetune.loggers import wandb_mode

    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = finetune(tmp_path, "disabled", "f5tts_tiny", "logger=wandb", "train.max_updates=1")
    assert not (run / "wandb").exists()  # WANDB_MODE=disabled is honoured: nothing written, nothing sent
    # credentials but no way to the server (a compute node behind a firewall): offline, one warning
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert wandb_mode() == "offline"
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"  # what the environment says, even with credentials and a server


def wandb_records(path) -> dict:
    """The records of a wandb offline run file, by kind, parsed with wandb's own protobuf schema. The file
    is a LevelDB-style log: 32 KiB blocks of chunks, each a 7-byte header (crc, length, type) and data."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = open(path, "rb").read(), 32768
    pos, chunk, records = 7, b"", {}  # 7 bytes: the file's own header (":W&B", version)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.setdefault(record.WhichOneof("record_type"), []).append(record)
            chunk = b""
    return records
