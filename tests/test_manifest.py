import os
import stat

import pytest
import yaml

from finetune.lock.errors import UserError
from finetune.lock.manifest import NAME, read_manifest, write_manifest

BODY = {"model": {"backbone": "DiT", "arch": {"dim": 64, "qk_norm": None, "ratio": 0.1}, "text": "对，这就是我"},
        "fingerprint": {"transformer.x.weight": "float32[4, 2]"}}


def test_round_trip(tmp_path):
    written = write_manifest(tmp_path, BODY)
    read = read_manifest(tmp_path)
    assert read == written
    assert read["model"] == BODY["model"] and read["fingerprint"] == BODY["fingerprint"]
    assert len(read["sha256"]) == 64


def test_file_is_readable_yaml_and_read_only(tmp_path):
    write_manifest(tmp_path, BODY)
    path = tmp_path / NAME
    text = path.read_text(encoding="utf-8")
    assert "对，这就是我" in text and "&id" not in text
    assert yaml.safe_load(text)["model"]["arch"]["dim"] == 64
    assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_written_once(tmp_path):
    write_manifest(tmp_path, BODY)
    before = (tmp_path / NAME).read_bytes()
    with pytest.raises(UserError, match="never rewritten"):
        write_manifest(tmp_path, {**BODY, "model": {}})
    assert (tmp_path / NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no temporary file left behind


def test_edit_is_detected(tmp_path):
    write_manifest(tmp_path, BODY)
    path = tmp_path / NAME
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace("dim: 64", "dim: 65"))
    with pytest.raises(UserError, match="edited"):
        read_manifest(tmp_path)


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(UserError, match="manifest.yaml: missing"):
        read_manifest(tmp_path)
