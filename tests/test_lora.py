"""LoRA (adapter=lora): only the adapter trains and is saved, bound to the exact base file it was trained on;
inference rebuilds the base, verifies it and applies the adapter; the merged export speaks as the adapter
does; adapters and whole models are told apart; a kill inside a save resumes bit for bit."""
import os
import shutil
import signal
import sys

import pytest
import torch
import yaml
from safetensors.torch import save_file

from finetune.lock.layouts import is_adapter_key
from finetune.lock.builder import fingerprint
from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.files import KILL_AT, sha256_file
from finetune.lock.load import load_model_file, load_run
from tests import preloaded
from tests.conftest import OFFLINE, REPO, TINY, finetune, infer
from bench.makers import ema_prefixed, tiny_state

LORA = ["adapter=lora", "adapter.rank=4", "train.max_updates=4", "train.save_every=2", "train.ema.update_after_step=2"]


def base_state(seed=0) -> dict:
    """Tiny weights with the tensors upstream initialises to zero (the blocks' gates, the output projection)
    drawn too: on a fresh model those stop every gradient before it reaches a block, as a trained base does not."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v if v.any() else 0.05 * torch.randn(v.shape, generator=generator)
            for k, v in tiny_state(seed=seed).items()}


def write_base(path, seed=0):
    """A base in the hub's layout (ema_model.* and EMA counters), as F5-TTS's own files are."""
    save_file({k: v.contiguous() for k, v in ema_prefixed(base_state(seed)).items()}, str(path))
    return path


def base_view(state: dict) -> dict:
    """The base's tensors of a model with LoRA layers, named as the base names them."""
    return {k.replace(".token_adapter", "").replace(".base_layer", ""): v for k, v in state.items()
            if not is_adapter_key(k)}


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A LoRA run on a tiny base file, and the trainer's model and EMA model as training left them."""
    from finetune.train import Trainer

    root = tmp_path_factory.mktemp("lora")
    base = write_base(root / "base.safetensors")
    seen = {}
    fit = Trainer.fit

    def keep(self):
        result = fit(self)
        seen["model"], seen["ema"] = self.accelerator.unwrap_model(self.model), self.ema.ema_model
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "fit", keep)
        run = finetune(root, "lora", "f5tts_tiny", f"pretrained={base}", *LORA)
    return {"run": run, "base": base, "root": root, **seen}


def sample(model, seed=3):
    torch.manual_seed(0)
    cond = torch.randn(1, 40, 100)
    out, _ = model.sample(cond=cond, text=[list("hello there")], duration=64, steps=3, seed=seed)
    return out


def test_a_lora_run_trains_and_saves_only_its_adapter(lora):
    run, base = lora["run"], lora["base"]
    trained, base_weights = lora["model"].state_dict(), base_state()
    assert base_view(trained).keys() == base_weights.keys()
    assert all(torch.equal(v, base_weights[k]) for k, v in base_view(trained).items())  # the base never moved
    shared = lora["ema"].state_dict()  # the EMA model averages the adapter and shares the base's memory
    assert all(shared[k].data_ptr() == v.data_ptr() for k, v in trained.items() if not is_adapter_key(k))
    assert {n for n, p in lora["model"].named_parameters() if p.requires_grad} == \
        {k for k in trained if is_adapter_key(k)}

    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    assert manifest["model"]["adapter"] == {"kind": "lora", "rank": 4, "alpha": 32.0, "tokens": [],
                                            "targets": ["to_q", "to_k", "to_v", "to_out.0", "ff.0.0", "ff.2"]}
    p = manifest["pretrained"]
    assert (p["sha256"], p["path"], p["fingerprint"]) == (sha256_file(base), str(base), fingerprint(base_weights))
    assert manifest["fingerprint"] == fingerprint({k: v for k, v in trained.items() if is_adapter_key(k)})
    full_bytes = 2 * sum(v.numel() * 4 for v in base_weights.values())
    for update, path in list_checkpoints(run).items():
        shapes, _ = header(path)
        assert all(is_adapter_key(k) for k in shapes) and {k.split(".")[0] for k in shapes} == {"ema", "online"}
        assert path.stat().st_size < full_bytes / 3
    online = load_weights(list_checkpoints(run)[4], "online")
    assert any(v.abs().sum() > 0 for k, v in online.items() if ".lora_B." in k)  # B starts at zero: it trained
    assert all(torch.equal(online[k], trained[k]) for k in online)
    ema = load_weights(list_checkpoints(run)[4], "ema")  # averaged, not copied: the EMA trains the adapter too
    assert ema.keys() == online.keys() and not all(torch.equal(ema[k], online[k]) for k in ema)


def test_inference_and_the_merged_export_speak_as_the_adapter_does(lora, tmp_path):
    run = lora["run"]
    assert infer(f"run={run}", "nfe_step=2", f"out={tmp_path / 'a.wav'}").is_file()
    merged = infer("export", f"run={run}", f"out={tmp_path / 'merged.safetensors'}")
    adapter = infer("export", f"run={run}", f"out={tmp_path / 'adapter.safetensors'}", "adapter_only=true")
    upstream = infer("export", f"run={run}", f"out={tmp_path / 'up.safetensors'}", "layout=upstream")
    assert header(merged)[0].keys() == fingerprint(base_state()).keys()
    assert {k.removeprefix("ema_model.") for k in header(upstream)[0]} == base_state().keys() | {"initted", "step"}
    shapes, meta = header(adapter)
    assert all(is_adapter_key(k) for k in shapes) and meta["base_sha256"] == sha256_file(lora["base"])
    assert adapter.stat().st_size * 10 < merged.stat().st_size

    unmerged, _, _ = load_run(run)
    whole, embedded = load_model_file(merged, "ema", "cpu")
    assert embedded["merged"]["run_manifest_sha256"] == yaml.safe_load((run / "manifest.yaml").read_text())["sha256"]
    want = sample(unmerged)
    assert torch.allclose(sample(whole), want, atol=1e-4), (sample(whole) - want).abs().max()
    assert torch.equal(sample(load_model_file(adapter, "ema", "cpu")[0]), want)
    assert infer(f"model_file={adapter}", "nfe_step=2", f"out={tmp_path / 'b.wav'}").is_file()


def test_the_base_file_is_verified_at_inference(lora, tmp_path):
    base = lora["base"]
    kept = tmp_path / "kept.safetensors"
    shutil.copy2(base, kept)
    want = sha256_file(base)
    try:
        write_base(base, seed=1)  # another file at the base's path
        with pytest.raises(UserError) as e:
            load_run(lora["run"])
        for needle in (want, sha256_file(base), str(base), "put that file back"):
            assert needle in str(e.value)
        assert "\n" not in str(e.value)
        base.unlink()
        with pytest.raises(UserError, match=f"its base {base} is missing .*sha256 {want}"):
            infer(f"run={lora['run']}", "nfe_step=2", f"out={tmp_path / 'x.wav'}")
    finally:
        shutil.copy2(kept, base)
    assert load_run(lora["run"])[0] is not None


def test_adapters_and_whole_models_are_told_apart(lora, tmp_path):
    ckpt = list_checkpoints(lora["run"])[4]
    with pytest.raises(UserError, match="it is an adapter: a LoRA adapter \\(rank 4, 24 adapter tensors on 12 modules"):
        finetune(tmp_path, "full", "f5tts_tiny", f"pretrained={ckpt}")
    with pytest.raises(UserError, match="it is an adapter"):
        finetune(tmp_path, "lora2", "f5tts_tiny", f"pretrained={ckpt}", "adapter=lora")
    copy = shutil.copytree(lora["run"], tmp_path / "copy", ignore=shutil.ignore_patterns(".lock"))
    shutil.copy2(lora["base"], copy / "checkpoints" / "model_00000099.safetensors")  # a whole, unbound file
    with pytest.raises(UserError, match="it is a whole model, while the run .* is an adapter run"):
        load_run(copy, "99", allow_foreign=True)
    with pytest.raises(UserError, match="adapter=lora trains an adapter on a pretrained base.*pretrained=null"):
        finetune(tmp_path, "scratch", "f5tts_tiny", "adapter=lora")
    with pytest.raises(UserError, match="adapter.rank: 4 -> 8"):
        resume(lora["run"], "adapter.rank=8")
    with pytest.raises(UserError, match="adapter.targets: 'nowhere' names no module.*block are attn_norm.linear, attn.to_q, attn.to_k"):
        finetune(tmp_path, "bad", "f5tts_tiny", f"pretrained={lora['base']}", "adapter=lora", "adapter.targets=[nowhere]")
    assert not any((tmp_path / n).exists() for n in ("full", "lora2", "scratch", "bad"))


def resume(run, *overrides):
    from finetune.__main__ import run as run_command

    return run_command([f"resume={run}", *overrides])[1]


def test_a_kill_inside_a_save_resumes_exactly(lora, tmp_path, capsys):
    args = [sys.executable, "-m", "finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "run.name=killed", *TINY,
            f"pretrained={lora['base']}", *LORA]
    proc = preloaded.run(args, cwd=REPO, env={**os.environ, **OFFLINE, KILL_AT: "model_00000004.safetensors"},
                         capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "killed"
    assert max(list_checkpoints(run)) == 2
    resume(run)
    assert "from update 2" in capsys.readouterr().err
    for w in ("ema", "online"):
        want, got = load_weights(list_checkpoints(lora["run"])[4], w), load_weights(list_checkpoints(run)[4], w)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), w


def test_starting_from_a_lora_run_starts_from_its_merged_model(lora, tmp_path):
    from finetune.lock.builder import model_spec
    from finetune.lock.manifest import read_manifest
    from finetune.lock.vocab import read_vocab
    from finetune.runs import initial_model

    vocab, _ = read_vocab(lora["run"] / "vocab.txt")
    spec = model_spec(read_manifest(lora["run"])["config"]["model"], vocab)
    model, pretrained, _ = initial_model(spec, vocab, str(lora["run"]), "f5tts_tiny", 0, 0)
    merged = load_run(lora["run"], merge=True)[0].state_dict()
    assert all(torch.equal(v, merged[k]) for k, v in model.state_dict().items())
    assert pretrained["file"] == "model_00000004.safetensors"

    # an adapter on the merged model: inference rebuilds the chain (base file, first adapter, merge, second)
    run = finetune(tmp_path, "second", "f5tts_tiny", f"pretrained={lora['run']}", "adapter=lora",
                   "adapter.rank=2", "train.max_updates=2")
    manifest = read_manifest(run)
    assert manifest["pretrained"]["run"] == str(lora["run"].resolve()) and manifest["pretrained"]["fingerprint"] == fingerprint(merged)
    second, _, _ = load_run(run)
    assert all(torch.equal(v, merged[k]) for k, v in base_view(second.state_dict()).items())


def test_vocab_extension_trains_the_appended_rows_alone(lora, tmp_path):
    from bench.makers import write_clips, write_metadata
    from tests.test_runs_data import prepare

    rows = write_clips(tmp_path / "src", 3, seed=8, max_s=2.0)
    rows[1] = (rows[1][0], "Words with ɐ and ¤ symbols.")
    ds = prepare(write_metadata(tmp_path / "meta.csv", rows), tmp_path / "ds")
    run = finetune(tmp_path, "ext", "f5tts_tiny", "data=custom", f"data.path={ds}", "data.frames_per_batch=800",
                   "vocab.extend=true", f"pretrained={lora['base']}", "adapter=lora", "adapter.rank=2",
                   "train.max_updates=2")
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    assert manifest["model"]["adapter"]["tokens"] == [2546, 2547]  # row 0 is the filler: symbol i is row i + 1
    online = load_weights(list_checkpoints(run)[2], "online")
    (rows_key,) = [k for k in online if "trainable_tokens_delta" in k]
    grown = torch.randn(2, 32, generator=torch.Generator().manual_seed(666))  # the appended rows as they started
    assert online[rows_key].shape == (2, 32) and not torch.equal(online[rows_key], grown)
    model, _, _ = load_run(run, weights="online", merge=True)
    embed = model.state_dict()["transformer.text_embed.text_embed.weight"]
    assert torch.equal(embed[2546:], online[rows_key]) and torch.equal(embed[:2546], base_state()[
        "transformer.text_embed.text_embed.weight"])
    assert infer(f"run={run}", "gen_text=Say ɐ.", f"out={tmp_path / 'ext.wav'}", "nfe_step=2").is_file()
