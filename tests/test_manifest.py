"""The manifest: written once, read-only, hashed; read back with a size cap, no YAML aliases, its hash and its
schema checked, so that a forged or damaged manifest is one line and not a traceback or a model."""
import os
import shutil
import stat

import pytest
import yaml

from finetune.lock.errors import UserError
from finetune.lock.manifest import FORMAT, NAME, content_hash, dump, parse_manifest, read_manifest, write_manifest
from tests.conftest import finetune, infer


def body_of(run) -> dict:
    return yaml.safe_load((run / NAME).read_text())


def test_round_trip(runs):
    read = read_manifest(runs["f5"])
    assert read == body_of(runs["f5"]) and len(read["sha256"]) == 64 and read["format"] == FORMAT


def test_file_is_readable_yaml_and_read_only(runs):
    text = (runs["f5"] / NAME).read_text(encoding="utf-8")
    assert "对，这就是我" in text or "nature" in text
    assert "&id" not in text and "*id" not in text
    assert not os.stat(runs["f5"] / NAME).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_written_once(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = (run / NAME).read_bytes()
    with pytest.raises(UserError, match="never rewritten"):
        write_manifest(run, {k: v for k, v in body_of(run).items() if k not in ("format", "sha256")})
    assert (run / NAME).read_bytes() == before
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]  # no temporary file left behind


def forge(run, change) -> None:
    """Edit a manifest as an attacker with write access would: change the body, then recompute its hash."""
    body = body_of(run)
    change(body)
    body["sha256"] = content_hash(body)
    os.chmod(run / NAME, 0o644)
    (run / NAME).write_text(dump(body), encoding="utf-8")


def test_edit_is_detected(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    os.chmod(run / NAME, 0o644)
    (run / NAME).write_text((run / NAME).read_text().replace("dim: 64", "dim: 65"))
    with pytest.raises(UserError, match="edited"):
        read_manifest(run)


@pytest.mark.parametrize("change, needle", [
    (lambda b: b["model"]["arch"].update(bogus=1), "model.arch.bogus: the manifest records this DiT argument"),
    (lambda b: b["model"]["arch"].update(dim="64"), "model.arch.dim='64': must be a whole number"),
    (lambda b: b["model"]["arch"].update(heads=0), "model.arch.heads=0: must be above 0"),
    (lambda b: b.pop("model"), "model: missing"),
    (lambda b: b.pop("fingerprint"), "fingerprint"),
    (lambda b: b["model"].update(backbone="os.system"), "model.backbone='os.system'"),
    (lambda b: b["model"]["vocab"].update(file="../../etc/passwd"), "model.vocab"),
    (lambda b: b["reference"].update(audio="/etc/passwd"), "reference"),
    (lambda b: b["config"]["logger"].update(project="${oc.env:HOME}"), "interpolation"),
    (lambda b: b["config"]["train"].update(seed=-5), "config.train.seed=-5"),
])
def test_forged_manifests_are_refused_by_their_schema(runs, tmp_path, change, needle):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    forge(run, change)
    with pytest.raises(UserError) as e:
        infer(f"run={run}", "nfe_step=1")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_anchors_aliases_and_oversize_files_are_refused_before_parsing(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    assert len(bomb) < 600  # expanded, it would be 9**9 = 387 million items
    with pytest.raises(UserError, match="anchors and aliases are not allowed here"):
        parse_manifest(bomb, "bomb.yaml")
    with pytest.raises(UserError, match="over 1024 kB"):
        parse_manifest("a: " + "x" * (1 << 20), "big.yaml")


def test_interpolations_in_a_shared_run_folder_are_never_resolved(runs, tmp_path, monkeypatch):
    """A manifest (or amendment) value like ${oc.env:SECRET} must not pull the environment into the run."""
    monkeypatch.setenv("F5TUNE_TEST_SECRET", "sekret-456")
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    forge(run, lambda b: b["config"]["logger"].update(project="${oc.env:F5TUNE_TEST_SECRET}"))
    from finetune.__main__ import run as run_command

    with pytest.raises(UserError, match="interpolation"):
        run_command([f"resume={run}", "train.max_updates=5"])
    assert not [p for p in run.rglob("*") if p.is_file() and b"sekret-456" in p.read_bytes()]


def test_format_1_manifests_still_read(runs, tmp_path):
    """Runs written before format 2 carry copies (text_num_embeds, a top-level vocoder, the data config);
    they read back in format 2's shape and their checkpoints still load."""
    run = shutil.copytree(runs["f5"], tmp_path / "old")

    def as_format_1(b):
        b["format"] = "f5tune-manifest/1"
        b["model"]["text_num_embeds"] = b["model"]["vocab"]["size"]
        b["vocoder"] = b["config"]["vocoder"]
        b["data"] = {**b["config"]["data"], **b["data"]}
        del b["config"]["run"]  # and a key added since: it takes its default

    forge(run, as_format_1)
    body = read_manifest(run)
    assert "text_num_embeds" not in body["model"] and "vocoder" not in body
    assert set(body["data"]) == {"path", "sha256", "clips", "hours"} and body["config"]["run"]["root"] == "runs"
    from finetune.lock.checkpoints import list_checkpoints, load_weights, save_checkpoint

    last = list_checkpoints(run)[4]  # bound to the manifest as written: bind a copy to the rewritten one
    save_checkpoint(run, 9, load_weights(last, "online"), load_weights(last, "ema"), body["sha256"])
    assert infer(f"run={run}", "nfe_step=1", f"out={tmp_path / 'o.wav'}").is_file()


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(UserError, match="manifest.yaml: missing"):
        read_manifest(tmp_path)
    (tmp_path / NAME).write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(UserError, match="not UTF-8"):
        read_manifest(tmp_path)


def test_a_new_run_always_writes_a_manifest_that_reads_back(tmp_path):
    run = finetune(tmp_path, "fresh", "e2tts_tiny", "train.max_updates=1")
    assert read_manifest(run)["model"]["name"] == "e2tts_tiny"
