"""The lock around a run: resume guard and amendments, adopt, export, inspect."""
import json
import shutil

import pytest
import soundfile as sf
import torch

from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.manifest import read_manifest
from tests.conftest import cli, finetune, infer
from bench.makers import tiny_state, write_layouts


def resume(run, *overrides):
    from finetune.__main__ import run as run_command

    return run_command([f"resume={run}", *overrides])


def test_resume_refuses_model_changes_listing_each(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = (run / "manifest.yaml").read_bytes()
    with pytest.raises(UserError) as e:
        resume(run, "model.arch.depth=3", "model.tokenizer=char", "train.max_updates=9")
    assert "model.arch.depth: 2 -> 3" in str(e.value) and "model.tokenizer: pinyin -> char" in str(e.value)
    with pytest.raises(UserError, match="model.backbone: DiT -> UNetT"):
        resume(run, "model=e2tts_tiny")
    with pytest.raises(UserError, match="optim.name: adamw -> adamw8bit"):
        resume(run, "optim.name=adamw8bit", "train.max_updates=9")
    assert (run / "manifest.yaml").read_bytes() == before
    assert not (run / "amendments.jsonl").exists() and sorted(list_checkpoints(run)) == [2, 4]


def test_resume_may_switch_runtime_settings_and_the_frame_budget(runs, tmp_path):
    """checkpoint_activations changes no tensor: a run that ran out of memory may resume with it on (and a
    smaller frame budget), as pretrained= always allowed."""
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    resume(run, "model.arch.checkpoint_activations=true", "data.frames_per_batch=1500", "train.max_updates=5")
    (entry,) = [json.loads(line) for line in (run / "amendments.jsonl").read_text().splitlines()]
    assert entry["changes"] == {"data.frames_per_batch": [2000, 1500], "model.arch.checkpoint_activations": [False, True],
                                "train.max_updates": [4, 5]}
    assert max(list_checkpoints(run)) == 5


def test_resume_continues_and_records_amendments(runs, tmp_path):
    run = shutil.copytree(runs["e2"], tmp_path / "r")
    before = (run / "manifest.yaml").read_bytes()
    run_dir, result = resume(run, "train.max_updates=6", "optim.lr=0.0005")
    assert run_dir == run and (result["updates"], result["state"]) == (6, "finished")
    assert sorted(list_checkpoints(run)) == [2, 4, 6]
    assert header(list_checkpoints(run)[6])[1]["update"] == "6"
    assert (run / "manifest.yaml").read_bytes() == before
    manifest_sha = header(list_checkpoints(run)[6])[1]["manifest_sha256"]
    (entry,) = [json.loads(line) for line in (run / "amendments.jsonl").read_text().splitlines()]
    assert entry["prev"] == manifest_sha == entry["manifest_sha256"]
    assert entry["changes"] == {"optim.lr": [0.001, 0.0005], "train.max_updates": [4, 6]}
    # a second resume chains to the first entry and sees its amendments as the current config
    resume(run, "train.max_updates=7")
    lines = [json.loads(line) for line in (run / "amendments.jsonl").read_text().splitlines()]
    assert lines[1]["prev"] == lines[0]["sha256"] and lines[1]["changes"] == {"train.max_updates": [6, 7]}
    # an edited amendments file is refused
    (run / "amendments.jsonl").write_text((run / "amendments.jsonl").read_text().replace("0.0005", "0.5"))
    with pytest.raises(UserError, match="amendments.jsonl: line 1"):
        resume(run, "train.max_updates=8")


def test_resume_to_a_length_already_reached_is_refused(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    with pytest.raises(UserError, match="at update 4 and plans 3; raise train.max_updates"):
        resume(run, "train.max_updates=3")
    assert not (run / "amendments.jsonl").exists()


def test_resume_without_a_manifest_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="manifest.yaml: missing"):
        resume(tmp_path / "empty")


def test_bad_settings_fail_before_the_run_folder(runs, tmp_path):
    for bad, needle in (("train.save_every=0", "train.save_every=0: must be above 0"),
                        ("train.epoch=3", "Key 'epoch' not in 'TrainConfig'"),
                        ("logger=wandbx", "logger/wandbx"),
                        ("train.log_samples=true vocoder=vocos vocoder.path=/nowhere",
                         "/nowhere/config.yaml: not found; vocoder.path must be a folder")):
        with pytest.raises(UserError, match=needle):
            finetune(tmp_path, "bad", "f5tts_tiny", *bad.split())
        assert not (tmp_path / "bad").exists(), bad
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(UserError, match="train.keep_last_n=0"):
        resume(run, "train.keep_last_n=0")
    assert sorted(p.name for p in run.rglob("*")) == before  # no amendment, nothing pruned


def test_damaged_last_checkpoint_resumes_from_the_previous(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    last = list_checkpoints(run)[4]
    last.write_bytes(last.read_bytes()[:1000])
    # keep_last_n=1 and an end before update 4: the damaged file must not count as the newest checkpoint
    resume(run, "train.max_updates=3", "train.save_every=1", "train.keep_last_n=1")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "model_00000003.safetensors", "model_00000004.safetensors.damaged", "state_00000003.pt",
        "state_00000004.pt.damaged"]
    _, result = resume(run, "train.max_updates=4")
    assert result["updates"] == 4


def test_adopt_each_upstream_layout_then_infer_and_finetune(tmp_path):
    paths = write_layouts(tmp_path, tiny_state(seed=5))
    root = tmp_path / "runs"
    for name in ("trainer.pt", "ema_only.pt", "hub.safetensors", "ddp.pt", "old.pt"):
        resume_free = ["adopt", f"ckpt={paths[name]}", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}"]
        from finetune.__main__ import run as run_command

        run_command(resume_free)
        assert list_checkpoints(root / name).keys() == {0}
    with pytest.raises(UserError, match="holds only EMA weights.*weights=ema"):
        infer(f"run={root / 'hub.safetensors'}", "weights=online", "vocoder=griffinlim")
    out = infer(f"run={root / 'trainer.pt'}", "vocoder=griffinlim", "nfe_step=2", f"out={tmp_path / 'adopted.wav'}")
    assert sf.info(str(out)).duration > 1
    # fine-tuning from the adopted run starts from its weights; a v0 model may not start from a v1 run
    run = finetune(root, "continued", "f5tts_tiny", f"pretrained={root / 'trainer.pt'}", "train.max_updates=1")
    assert f"source: {root / 'trainer.pt'}" in (run / "manifest.yaml").read_text()
    with pytest.raises(UserError, match="text_mask_padding: True -> False.*pass model=f5tts_tiny"):
        finetune(root, "v0", "f5tts_v0_tiny", f"pretrained={root / 'trainer.pt'}")


def adopt(*args):
    from finetune.__main__ import run as run_command

    return run_command(["adopt", *args])[0]


def test_adopt_refuses_to_guess_between_v0_and_v1(tmp_path):
    paths = write_layouts(tmp_path, tiny_state())
    with pytest.raises(UserError, match="f5tts_tiny, f5tts_v0_tiny.*identical.*text_mask_padding.*pass config=.*or "
                                        "model= one of"):
        adopt(f"ckpt={paths['hub.safetensors']}", f"run.root={tmp_path}")
    run = adopt(f"ckpt={paths['hub.safetensors']}", "model=f5tts_v0_tiny", f"run.root={tmp_path}", "run.name=v0")
    text = (run / "manifest.yaml").read_text()
    assert "text_mask_padding: false" in text and "pe_attn_head: 1" in text


def test_adopt_with_the_wrong_vocab_says_which(tmp_path):
    sd = tiny_state()
    sd["transformer.text_embed.text_embed.weight"] = torch.zeros(2586, 32)
    path = tmp_path / "extended.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    with pytest.raises(UserError, match="2586 text rows.*vocab="):
        adopt(f"ckpt={path}", f"run.root={tmp_path}")


def test_adopt_a_size_no_config_names(tmp_path):
    """A DiT of another size: shapes cannot tell v0 from v1, so adopt names both commands and asks for the
    training config; given upstream's config (as its train.py leaves it), adopt needs no hint. An E2 file of
    another size gets the one command that adopts it."""
    import yaml
    from safetensors.torch import save_file

    from finetune.config import model_config
    from finetune.lock.builder import build_model, model_spec
    from bench.makers import VOCAB, ema_prefixed

    def odd(name, **sizes):
        cfg = model_config(name)
        cfg["arch"] = {**cfg["arch"], **sizes}
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in ema_prefixed(build_model(model_spec(cfg, VOCAB), VOCAB).state_dict()).items()},
                  str(path))
        return path, cfg

    path, cfg = odd("f5tts_v0_tiny", dim=48, depth=3)
    with pytest.raises(UserError, match=r"cannot tell F5-TTS v1 from F5-TTS v0 apart.*adopt will not guess: pass "
                                        r"config=.*model=f5tts_tiny model.arch.dim=48 model.arch.depth=3 \(F5-TTS v1\) "
                                        r"\| model=f5tts_v0_tiny model.arch.dim=48 model.arch.depth=3 \(F5-TTS v0\)"):
        adopt(f"ckpt={path}", f"run.root={tmp_path}")
    hydra = {"hydra": {"run": {"dir": "ckpts/${model.name}"}},  # upstream's own interpolations: never resolved
             "model": {"name": "my_v0", "tokenizer": "pinyin", "tokenizer_path": None, "backbone": "DiT",
                       "arch": {k: cfg["arch"][k] for k in ("dim", "depth", "heads", "ff_mult", "text_dim",
                                                             "text_mask_padding", "conv_layers", "pe_attn_head")},
                       "mel_spec": {"target_sample_rate": 24000, "n_mel_channels": 100, "mel_spec_type": "vocos"}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(hydra))
    run = adopt(f"ckpt={path}", f"config={config}", f"run.root={tmp_path}", "run.name=odd")
    manifest = read_manifest(run)
    assert (manifest["model"]["family"], manifest["model"]["arch"]["dim"]) == ("F5-TTS v0", 48)
    assert manifest["pretrained"]["assumed"]["model.arch.text_mask_padding"] is False
    assert infer(f"run={run}", "nfe_step=1", "vocoder=griffinlim", f"out={tmp_path / 'odd.wav'}").is_file()
    with pytest.raises(UserError, match="does not fit config=.*F5TTS_v1_Base.yaml: a different size"):
        from importlib.resources import files

        adopt(f"ckpt={path}", f"config={files('f5_tts') / 'configs' / 'F5TTS_v1_Base.yaml'}", f"run.root={tmp_path}")

    path, _ = odd("e2tts_tiny", dim=48)
    with pytest.raises(UserError) as e:
        adopt(f"ckpt={path}", f"run.root={tmp_path}")
    hint = str(e.value).split("at its own size: ", 1)[1].split()
    assert hint == ["model=e2tts_tiny", "model.arch.dim=48"]
    assert adopt(f"ckpt={path}", *hint, f"run.root={tmp_path}", "run.name=odd_e2").is_dir()


def test_export_round_trips_ours_and_upstreams(runs, tmp_path):
    run = runs["f5"]
    ours, theirs, online = tmp_path / "ours.safetensors", tmp_path / "up.safetensors", tmp_path / "on.safetensors"
    infer("export", f"run={run}", f"out={ours}")
    infer("export", f"run={run}", f"out={theirs}", "layout=upstream", "ckpt=2")
    infer("export", f"run={run}", f"out={online}", "layout=upstream", "weights=online")
    with pytest.raises(UserError, match="never overwrites"):
        infer("export", f"run={run}", f"out={ours}")
    mine = tmp_path / "mine_vocab.txt"  # the vocab file an upstream-layout export would write beside it
    mine.write_text("mine")
    with pytest.raises(UserError, match="never overwrites"):
        infer("export", f"run={run}", f"out={tmp_path / 'mine.safetensors'}", "layout=upstream")
    assert mine.read_text() == "mine" and not (tmp_path / "mine.safetensors").exists()

    args = ["gen_text=Round trip.", "nfe_step=3", "seed=7", "ref_text=Some call me nature.",
            f"ref_audio={run / 'reference.wav'}"]
    a = infer(f"run={run}", f"out={tmp_path / 'a.wav'}", *args)
    b = infer(f"model_file={ours}", f"out={tmp_path / 'b.wav'}", *args)
    assert (sf.read(str(a))[0] == sf.read(str(b))[0]).all()  # same model, same seed: the same samples

    # upstream f5-tts's own loader reads our upstream-layout exports, EMA and online, strictly
    import yaml
    from f5_tts.infer.utils_infer import load_model
    from f5_tts.model import DiT

    arch = {k: v for k, v in yaml.safe_load((run / "manifest.yaml").read_text())["model"]["arch"].items() if v is not None}
    for path, ckpt, weights, use_ema in ((theirs, 2, "ema", True), (online, 4, "online", False)):
        model = load_model(DiT, arch, str(path), vocab_file=str(path.with_name(path.stem + "_vocab.txt")), device="cpu",
                           use_ema=use_ema)
        expected = load_weights(list_checkpoints(run)[ckpt], weights)
        assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected), weights

    # and upstream's Trainer fine-tunes from the EMA export: its EMA state, counters included, loads strictly
    from f5_tts.model import Trainer

    folder = tmp_path / "upstream_ckpts"
    folder.mkdir()
    shutil.copy(theirs, folder / "pretrained_up.safetensors")
    trainer = Trainer(model, epochs=1, learning_rate=1e-5, checkpoint_path=str(folder), logger=None)
    assert trainer.load_checkpoint() == 0
    saved = torch.load(run / "checkpoints" / "state_00000002.pt", weights_only=True)
    assert int(trainer.ema_model.step) == int(saved["ema_step"]) > 0 and bool(trainer.ema_model.initted)


def test_export_reads_the_weights_once(runs, tmp_path, monkeypatch):
    """Checked from the header, then read once: no model load, one pass over the chosen set."""
    import finetune.lock.checkpoints as checkpoints

    reads = []
    original = checkpoints.load_weights
    monkeypatch.setattr("infer.export.load_weights", lambda *a: reads.append(a) or original(*a))
    monkeypatch.setattr(checkpoints, "read_into", lambda *a: pytest.fail("export loaded a model"))
    infer("export", f"run={runs['e2']}", f"out={tmp_path / 'x.safetensors'}")
    assert len(reads) == 1


def test_model_file_refuses_a_file_without_manifest(tmp_path):
    paths = write_layouts(tmp_path, tiny_state())
    with pytest.raises(UserError, match="not an f5tune export"):
        infer(f"model_file={paths['hub.safetensors']}")


def test_inspect_run_and_files(runs, tmp_path):
    from infer.inspect import file_report, run_report

    report = "\n".join(run_report(runs["e2"]))
    for needle in ("manifest: verifies", "E2-TTS", "dim: 64", "depth: 2", "heads: 2", "2546 text rows",
                   "4: bound, fits, ema+online"):
        assert needle in report, (needle, report)
    from finetune.lock.builder import build_model
    from bench.makers import VOCAB, spec_of

    model = build_model(spec_of("e2tts_tiny"), VOCAB)
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,}" in report  # buffers are not parameters
    paths = write_layouts(tmp_path, tiny_state())
    report = "\n".join(file_report(paths["trainer.pt"]))
    assert "backbone: DiT" in report and "weights: ema, online" in report and "update: 10" in report
    report = "\n".join(file_report(paths["hub.safetensors"]))
    assert "weights: ema" in report and "text_dim: 32" in report and "conv_layers: 1" in report


def test_inspect_of_a_broken_manifest_is_one_line(runs, tmp_path):
    import os

    run = shutil.copytree(runs["f5"], tmp_path / "r")
    os.chmod(run / "manifest.yaml", 0o644)
    (run / "manifest.yaml").write_text("format: f5tune-manifest/2\nmodel: [unclosed\n")
    r = cli("infer.inspect", str(run))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error[manifest]: ")


def test_version_drift_warning(capsys):
    from finetune.lock.load import warn_version_drift

    warn_version_drift({"versions": {"f5-tts": "0.9.0", "torch": torch.__version__.split("+")[0]}})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "f5-tts 0.9.0 (run) vs 1.1.22 (installed)" in err


def test_an_export_that_fails_midway_leaves_nothing_and_can_be_retried(runs, tmp_path, monkeypatch):
    out = tmp_path / "up.safetensors"

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("infer.export.save_file", full_disk)
    with pytest.raises((UserError, OSError)):
        infer("export", f"run={runs['f5']}", f"out={out}", "layout=upstream")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the vocab file written first was taken back
    monkeypatch.undo()
    assert infer("export", f"run={runs['f5']}", f"out={out}", "layout=upstream") == out
    assert (tmp_path / "up_vocab.txt").is_file()


def test_an_export_whose_named_manifest_is_not_the_embedded_one_is_refused(runs, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = infer("export", f"run={runs['e2']}", f"out={tmp_path / 'x.safetensors'}")
    with safe_open(str(out), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata={**meta, "manifest_sha256": "0" * 64})
    with pytest.raises(UserError, match="names manifest 000000000000, the embedded manifest is") as e:
        infer(f"model_file={tmp_path / 'edited.safetensors'}", "nfe_step=1")
    assert e.value.code == "manifest"
