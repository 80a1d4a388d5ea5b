"""Resume guard, amendments, adopt, export and inspect, through the real CLIs."""
import json
import shutil

import soundfile as sf
import torch

from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from tests.conftest import TINY, assert_user_error, cli, finetune
from tests.test_layouts import tiny_state, write_layouts


def test_resume_refuses_model_changes_listing_each(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = (run / "manifest.yaml").read_bytes()
    r = cli("finetune", f"resume={run}", "model.arch.depth=3", "model.tokenizer=char", "train.max_updates=9")
    assert_user_error(r, "model.arch.depth: 2 -> 3", "model.tokenizer: pinyin -> char")
    assert_user_error(cli("finetune", f"resume={run}", "model=e2tts_tiny"), "model.backbone: DiT -> UNetT")
    assert (run / "manifest.yaml").read_bytes() == before
    assert not (run / "amendments.jsonl").exists() and sorted(list_checkpoints(run)) == [2, 4]


def test_resume_continues_and_records_amendments(runs, tmp_path):
    run = shutil.copytree(runs["e2"], tmp_path / "r")
    before = (run / "manifest.yaml").read_bytes()
    r = cli("finetune", f"resume={run}", "train.max_updates=6", "optim.lr=0.0005")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "from update 4" in r.stderr and r.stdout.strip().splitlines()[-1] == f"run: {run}"
    assert sorted(list_checkpoints(run)) == [2, 4, 6]
    assert header(list_checkpoints(run)[6])[1]["update"] == "6"
    assert (run / "manifest.yaml").read_bytes() == before
    manifest_sha = header(list_checkpoints(run)[6])[1]["manifest_sha256"]
    (entry,) = [json.loads(line) for line in (run / "amendments.jsonl").read_text().splitlines()]
    assert entry["prev"] == manifest_sha == entry["manifest_sha256"]
    assert entry["changes"] == {"optim.lr": [0.001, 0.0005], "train.max_updates": [4, 6]}
    # a second resume chains to the first entry and sees its amendments as the current config
    r = cli("finetune", f"resume={run}", "train.max_updates=7")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in (run / "amendments.jsonl").read_text().splitlines()]
    assert lines[1]["prev"] == lines[0]["sha256"] and lines[1]["changes"] == {"train.max_updates": [6, 7]}
    # an edited amendments file is refused
    (run / "amendments.jsonl").write_text((run / "amendments.jsonl").read_text().replace("0.0005", "0.5"))
    assert_user_error(cli("finetune", f"resume={run}", "train.max_updates=8"), "amendments.jsonl: line 1")


def test_resume_without_a_manifest_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("finetune", f"resume={tmp_path / 'empty'}"), "manifest.yaml: missing")


def test_bad_settings_fail_in_one_line_before_the_run_folder(runs, tmp_path):
    for bad, needles in (("train.save_every=0", ["train.save_every=0: must be 1 or more"]),
                         ("train.epoch=3", ["Key 'epoch' not in 'TrainConfig'", "--help"]),
                         ("logger=wandbx", ["logger/wandbx", "none tensorboard wandb"]),
                         ("train.log_samples=true vocoder=vocos vocoder.path=/nowhere",
                          ["/nowhere/config.yaml: not found; vocoder.path must be a folder"])):
        r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "run.name=bad", *TINY, *bad.split())
        assert len(assert_user_error(r, *needles).strip().splitlines()) == 1, bad
        assert not (tmp_path / "bad").exists(), bad
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = sorted(p.name for p in run.rglob("*"))
    assert_user_error(cli("finetune", f"resume={run}", "train.keep_last_n=0"), "train.keep_last_n=0")
    assert sorted(p.name for p in run.rglob("*")) == before  # no amendment, nothing pruned


def test_damaged_last_checkpoint_resumes_from_the_previous(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    last = list_checkpoints(run)[4]
    last.write_bytes(last.read_bytes()[:1000])
    # keep_last_n=1 and an end before update 4: the damaged file must not count as the newest checkpoint
    r = cli("finetune", f"resume={run}", "train.max_updates=3", "train.save_every=1", "train.keep_last_n=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checkpoint 4" in r.stderr and "damaged" in r.stderr and "from update 2" in r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "model_00000003.safetensors", "model_00000004.safetensors.damaged", "state_00000003.pt",
        "state_00000004.pt.damaged"]
    r = cli("finetune", f"resume={run}", "train.max_updates=4")
    assert r.returncode == 0 and "from update 3" in r.stderr, r.stderr[-3000:]


def test_adopt_each_upstream_layout_then_infer_and_finetune(tmp_path):
    paths = write_layouts(tmp_path, tiny_state(seed=5))
    root = tmp_path / "runs"
    for name in ("trainer.pt", "ema_only.pt", "hub.safetensors", "ddp.pt", "old.pt"):
        r = cli("finetune", "adopt", f"ckpt={paths[name]}", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}")
        assert r.returncode == 0, (name, r.stderr[-3000:])
        assert list_checkpoints(root / name).keys() == {0}
    assert_user_error(cli("infer", f"run={root / 'hub.safetensors'}", "weights=online", "vocoder=griffinlim"),
                      "holds only EMA weights", "weights=ema")
    out = tmp_path / "adopted.wav"
    r = cli("infer", f"run={root / 'trainer.pt'}", "vocoder=griffinlim", "nfe_step=2", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sf.info(str(out)).duration > 1
    # fine-tuning from the adopted run starts from its weights; a v0 model may not start from a v1 run
    run = finetune(root, "continued", "f5tts_tiny", f"pretrained={root / 'trainer.pt'}", "train.max_updates=1")
    assert f"source: {root / 'trainer.pt'}" in (run / "manifest.yaml").read_text()
    assert_user_error(cli("finetune", "model=f5tts_v0_tiny", f"run.root={root}", "data=demo",
                          f"pretrained={root / 'trainer.pt'}"), "text_mask_padding: True -> False",
                      "pass model=f5tts_tiny")


def test_adopt_refuses_to_guess_between_v0_and_v1(tmp_path):
    paths = write_layouts(tmp_path, tiny_state())
    r = cli("finetune", "adopt", f"ckpt={paths['hub.safetensors']}", f"run.root={tmp_path}")
    assert_user_error(r, "f5tts_tiny, f5tts_v0_tiny", "identical", "pass model=")
    r = cli("finetune", "adopt", f"ckpt={paths['hub.safetensors']}", "model=f5tts_v0_tiny", f"run.root={tmp_path}",
            "run.name=v0")
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "v0" / "manifest.yaml").read_text()
    assert "text_mask_padding: false" in text and "pe_attn_head: 1" in text


def test_adopt_with_the_wrong_vocab_says_which(tmp_path):
    sd = tiny_state()
    sd["transformer.text_embed.text_embed.weight"] = torch.zeros(2586, 32)
    path = tmp_path / "extended.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    assert_user_error(cli("finetune", "adopt", f"ckpt={path}", f"run.root={tmp_path}"),
                      "2586 text rows", "vocab=")


def test_export_round_trips_ours_and_upstreams(runs, tmp_path):
    run = runs["f5"]
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "up.safetensors"
    assert cli("infer", "export", f"run={run}", f"out={ours}").returncode == 0
    assert cli("infer", "export", f"run={run}", f"out={theirs}", "layout=upstream", "ckpt=2").returncode == 0
    assert_user_error(cli("infer", "export", f"run={run}", f"out={ours}"), "never overwrites")
    mine = tmp_path / "mine_vocab.txt"  # the vocab file an upstream-layout export would write beside it
    mine.write_text("mine")
    assert_user_error(cli("infer", "export", f"run={run}", f"out={tmp_path / 'mine.safetensors'}", "layout=upstream"),
                      "never overwrites")
    assert mine.read_text() == "mine" and not (tmp_path / "mine.safetensors").exists()

    args = ["gen_text=Round trip.", "nfe_step=3", "seed=7", "ref_text=Some call me nature.",
            f"ref_audio={run / 'reference.wav'}"]
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert cli("infer", f"run={run}", f"out={a}", *args).returncode == 0
    r = cli("infer", f"model_file={ours}", f"out={b}", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (sf.read(str(a))[0] == sf.read(str(b))[0]).all()  # same model, same seed: the same samples

    # upstream f5-tts's own loader reads our upstream-layout export
    import yaml
    from f5_tts.infer.utils_infer import load_model
    from f5_tts.model import DiT

    arch = {k: v for k, v in yaml.safe_load((run / "manifest.yaml").read_text())["model"]["arch"].items() if v is not None}
    model = load_model(DiT, arch, str(theirs), vocab_file=str(tmp_path / "up_vocab.txt"), device="cpu")
    expected = load_weights(list_checkpoints(run)[2], "ema")
    got = model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_model_file_refuses_a_file_without_manifest(tmp_path):
    paths = write_layouts(tmp_path, tiny_state())
    assert_user_error(cli("infer", f"model_file={paths['hub.safetensors']}"), "not an f5tune export")


def test_inspect_run_and_files(runs, tmp_path):
    r = cli("infer.inspect", str(runs["e2"]))
    assert r.returncode == 0, r.stderr
    for needle in ("manifest: verifies", "E2-TTS", "dim: 64", "depth: 2", "heads: 2", "2546 text rows",
                   "4: bound, fits, ema+online"):
        assert needle in r.stdout, (needle, r.stdout)
    paths = write_layouts(tmp_path, tiny_state())
    r = cli("infer.inspect", str(paths["trainer.pt"]))
    assert "backbone: DiT" in r.stdout and "weights: ema, online" in r.stdout and "update: 10" in r.stdout
    r = cli("infer.inspect", str(paths["hub.safetensors"]))
    assert "weights: ema" in r.stdout and "text_dim: 32" in r.stdout and "conv_layers: 1" in r.stdout
    assert_user_error(cli("infer.inspect", str(tmp_path / "nothing")), "no such file")


def test_version_drift_warning(capsys):
    from finetune.lock.load import warn_version_drift

    warn_version_drift({"versions": {"f5-tts": "0.9.0", "torch": torch.__version__.split("+")[0]}})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "f5-tts 0.9.0 (run) vs 1.1.22 (installed)" in err
