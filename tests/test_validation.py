"""Held-out clips: a split by content hash, recorded, never trained on, kept on resume; validation loss with
fixed noise, the same twice for one checkpoint, different between checkpoints."""
import json

import pytest
import yaml

from finetune.lock.checkpoints import header, list_checkpoints
from finetune.media.dataset import prepared_clips, split
from finetune.lock.errors import UserError
from tests.conftest import finetune
from bench.makers import spec_of
from bench.makers import write_clips, write_metadata
from tests.test_runs_data import prepare


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    return prepare(write_metadata(root / "m.csv", write_clips(root / "src", 12, seed=4, max_s=3.0)), root / "ds")


def tune(root, name, ds, *extra):
    return finetune(root, name, "f5tts_tiny", "data=custom", f"data.path={ds}", "data.frames_per_batch=900",
                    "vocab.accept_unknown=true", *extra)


def test_the_split_is_drawn_by_content_whatever_the_row_order(ds, tmp_path):
    clips, _ = prepared_clips(ds, spec_of("f5tts_tiny"))
    train, held = split(clips, 3)
    assert len(held) == 3 and len(train) == 9 and not {c.where for c in held} & {c.where for c in train}
    _, again = split(list(reversed(clips)), 3)
    assert {c.sha for c in again} == {c.sha for c in held}
    assert len(split(clips, 0.25)[1]) == 3 and split(clips, 0) == (clips, [])
    for bad in (12, 2.5):
        with pytest.raises(UserError, match="data.val_clips"):
            split(clips, bad)


def test_held_out_clips_are_recorded_never_trained_on_and_kept_on_resume(ds, tmp_path, monkeypatch):
    from finetune.media.dataset import Clip

    seen = []
    with_mel = Clip.with_mel
    monkeypatch.setattr(Clip, "with_mel", lambda self: seen.append(self.where) or with_mel(self))
    run = tune(tmp_path, "r", ds, "data.val_clips=3", "train.max_updates=12", "train.save_every=6")
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    val = manifest["data"]["val"]
    assert val["clips"] == 3 and len(val["rows"]) == 3 == len(set(val["audio_sha256"]))
    clips, _ = prepared_clips(ds, spec_of("f5tts_tiny"))
    assert set(val["rows"]) == {c.where for c in split(clips, 3)[1]}
    assert len({w for w in seen if w not in val["rows"]}) == 9  # every training clip was used ...
    # ... and a held-out clip was only ever read for validation: once per checkpoint and weight set
    assert all(seen.count(row) == 2 * 2 for row in val["rows"]), {r: seen.count(r) for r in val["rows"]}

    from finetune.__main__ import run as run_command

    with pytest.raises(UserError, match="data.val_clips: 3.0 -> 4.0"):
        run_command([f"resume={run}", "data.val_clips=4", "train.max_updates=14"])
    seen.clear()
    run_command([f"resume={run}", "train.max_updates=18"])
    assert all(seen.count(row) == 2 for row in val["rows"])  # the same three, validated at update 18 only


def test_validation_loss_is_fixed_per_checkpoint_and_differs_between(ds, tmp_path):
    from finetune.lock.load import load_run
    from finetune.media.validation import validation_loss

    run = tune(tmp_path, "v", ds, "data.val_clips=2", "train.max_updates=6", "train.save_every=3",
               "train.val_every=1", "train.log_every=100")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # every val_every update has its line
    assert all(("val_loss_ema" in m) == (m["update"] in (3, 6)) for m in metrics)  # EMA at checkpoints
    held = split(prepared_clips(ds, spec_of("f5tts_tiny"))[0], 2)[1]
    losses = {}
    for update, path in list_checkpoints(run).items():
        meta = header(path)[1]
        model, _, _ = load_run(run, str(update), "online")
        first, second = validation_loss(model, held, 666), validation_loss(model, held, 666)
        assert first == second == pytest.approx(float(meta["val_loss"]), abs=1e-6)  # the trainer's own figure
        losses[update] = first
    assert losses[3] != losses[6]
    assert next(m["val_loss"] for m in metrics if m["update"] == 6) == pytest.approx(losses[6], abs=1e-6)


def test_validation_leaves_the_training_rng_where_it_was(ds, tmp_path):
    """The same run with validation at every update and at its end only trains on the same noise."""
    import torch

    from finetune.lock.checkpoints import load_weights

    a = tune(tmp_path, "end", ds, "data.val_clips=2", "train.max_updates=3", "train.save_every=3")
    b = tune(tmp_path, "every", ds, "data.val_clips=2", "train.max_updates=3", "train.save_every=3", "train.val_every=1")
    wa, wb = load_weights(list_checkpoints(a)[3], "online"), load_weights(list_checkpoints(b)[3], "online")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
