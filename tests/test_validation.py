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


def test_early_stopping_stops_with_a_checkpoint_and_keep_last_n_keeps_the_best(ds, tmp_path):
    """patience=2 with a min_delta no loss change can meet: validations at updates 1, 2, 3 count 0, 1, 2 without
    improvement, so the run stops at update 3 as SIGTERM stops it (a checkpoint, state `stopped` with the
    reason, the verified finish), and keep_last_n=1 leaves the newest checkpoint and the best one."""
    from finetune.__main__ import run as run_command

    with pytest.raises(UserError, match="train.early_stop.patience=2 counts validations.*data.val_clips"):
        tune(tmp_path, "none", ds, "train.early_stop.patience=2")
    run = tune(tmp_path, "es", ds, "data.val_clips=3", "train.val_every=1", "train.save_every=1",
               "train.keep_last_n=1", "train.max_updates=40", "train.early_stop.patience=2",
               "train.early_stop.min_delta=100")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["update"] == 3 and "early stop at update 3" in status["message"]
    losses = [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = 1 + min(range(3), key=lambda i: (losses[i], i))
    assert set(list_checkpoints(run)) == {best, 3}
    assert float(header(list_checkpoints(run)[best])[1]["val_loss"]) == pytest.approx(min(losses), rel=1e-6)
    # a resume may amend it (a training key): without patience the run goes on from update 3
    _, result = run_command([f"resume={run}", "train.early_stop.patience=null", "train.max_updates=4"])
    assert result["updates"] == 4


def test_pruning_keeps_the_checkpoint_with_the_best_held_out_loss(tmp_path):
    import torch

    from finetune.lock.checkpoints import save_checkpoint, save_train_state, state_path
    from finetune.train import best_checkpoint, prune

    sd = {"w": torch.zeros(2)}
    for update, loss in ((1, 0.5), (2, 0.2), (3, 0.9), (4, 0.7)):
        save_train_state(tmp_path, update, {"update": update})
        save_checkpoint(tmp_path, update, sd, {"w": torch.ones(2)}, "0" * 64, {"val_loss": loss})
    assert best_checkpoint(tmp_path) == 2
    prune(tmp_path, 1, best_checkpoint(tmp_path))
    assert set(list_checkpoints(tmp_path)) == {2, 4} and state_path(tmp_path, 2).is_file()
    prune(tmp_path, 1)  # without a best, the newest alone
    assert set(list_checkpoints(tmp_path)) == {4}
