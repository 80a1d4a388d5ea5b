"""Runs from the trainer's side: start a new run (everything checked before its folder exists) or resume one."""
import os
import sys
from pathlib import Path

from .config import apply_overrides
from .data import check_frame_budget
from .lock.adapter import adapter_spec, load_trained, trained_state, with_adapter
from .media.audio import load_audio
from .lock.builder import build_model, fingerprint, model_spec, runtime_spec
from .lock.upstream import check_trainable
from .lock.checkpoints import (
    CKPT_DIR,
    DamagedFile,
    binding_error,
    ema_counters,
    header,
    list_checkpoints,
    load_train_state,
    load_weights,
    pick_checkpoint,
    read_state,
    read_upstream,
    resolve_pretrained,
    state_path,
)
from .media.dataset import load_clips, split, split_record
from .lock.diagnose import check_fits
from .lock.errors import UserError
from .lock.files import FolderLock, sha256_file
from .lock.load import adapter_model, build_checked, load_checkpoint, load_run
from .lock.manifest import read_manifest
from .lock.schema import MODEL, RUNTIME, TRAINING, flatten, kind_of
from .lock.vocab import (
    EMBED,
    default_vocab_path,
    grow_text_embedding,
    read_vocab,
    settle_vocab,
)
from .runfolder import (
    AMENDMENTS,
    METRICS,
    STATUS,
    append_amendment,
    create_run,
    manifest_and_config,
    manifest_body,
    pretrained_record,
    run_path,
)
from .train import Trainer, make_accelerator, optimizer_class


def model_differences(spec: dict, other: dict) -> list[str]:
    """`key: theirs -> mine` for every key that changes the model (schema kind `model`) between two specs."""
    def keys(m):
        return {k: v for k, v in flatten({x: m[x] for x in ("backbone", "arch", "mel", "tokenizer")}).items()
                if kind_of(f"model.{k}") == MODEL}

    mine, theirs = keys(spec), keys(other)
    return [f"{k}: {theirs.get(k)} -> {mine.get(k)}" for k in sorted(mine.keys() | theirs.keys())
            if mine.get(k) != theirs.get(k)]


def pretrained_run_checkpoint(run_dir: Path, spec: dict, wanted: str) -> tuple[Path, dict]:
    """pretrained=<run folder>: its last checkpoint and that run's manifest, if that run's model is the one
    asked for and the checkpoint is bound to that run."""
    manifest = read_manifest(run_dir)
    other = manifest["model"]
    diffs = model_differences(spec, other)
    if diffs:
        raise UserError(f"pretrained={run_dir} is a {other['family']} {other['name']} run; model={wanted} differs "
                        f"({'; '.join(diffs)}); pass model={other['name']} to continue from it", code="model")
    path = pick_checkpoint(run_dir, "last")
    # strict: an unbound one too, as inference would refuse it as a LoRA base
    error = binding_error(header(path)[1], manifest, Path(run_dir), path, strict=True)
    if error:
        raise UserError(f"pretrained={run_dir}: {error}; move that file out of its checkpoints/ or pick another run "
                        f"(or name the file itself: pretrained=<its path>)", code="binding")
    return path, manifest


def initial_model(spec: dict, vocab: list[str], source, wanted: str, grow: int, seed: int, sha256=None,
                  dropout: float = 0.0):
    """The model a run starts from, and the EMA it starts with (None: a copy of the model, counters at 0).

    Built (random init from the seeded RNG), then the pretrained weights, their text embedding first grown
    by the `grow` symbols appended to the vocab. As upstream's Trainer does: the model starts from the file's
    online weights where it has them (else its EMA), and the EMA from the file's EMA with its counters, so
    it continues warm. With `sha256` (a run started again from update 0) the file must be the one the
    manifest recorded.

    pretrained=<run folder> starts from that run's model: a LoRA run's is its adapter merged into its base.
    With an adapter in `spec`, the EMA weights are the frozen base, and the adapter (initialised from `seed`)
    goes on top; the base is recorded (where its file is, its model's fingerprint) for inference to find."""
    adapter = spec.get("adapter")
    model = build_model(spec, vocab, init_weights=not adapter)  # a LoRA base is always loaded whole below
    if not source:
        return model, None, None
    from_run = Path(source).is_dir()
    if from_run:
        path, other = pretrained_run_checkpoint(Path(source), spec, wanted)
    else:
        path, other = resolve_pretrained(source), None
    digest = sha256_file(path)
    if sha256 and digest != sha256:
        raise UserError(f"pretrained {path}: sha256 {digest[:12]}, the run started from {sha256[:12]}; "
                        "put the original file back to restart this run from update 0", code="resume")
    if other is not None and other["model"].get("adapter"):  # a LoRA run: its adapter merged into its base
        ema = online = load_checkpoint(Path(source), path, "ema", merge=True)[0].state_dict()
        counters = {}
    else:
        ema = read_upstream(path)
        online = read_state(path, "online") or ema
        counters = _counters(path, other)
    if grow and EMBED in ema:  # the same seed: both sets gain the same new rows
        ema, online = (grow_text_embedding(sd, grow, seed) for sd in (ema, online))
    expected = fingerprint(model.state_dict())
    for sd in (online, ema):
        check_fits(expected, fingerprint(sd), path, f"model={wanted}")
    pretrained = pretrained_record(source, path, digest, spec)
    if adapter:
        model.load_state_dict(ema, strict=True)
        pretrained |= {"path": str(path.resolve()), "fingerprint": fingerprint(model.state_dict()),
                       **({"run": str(Path(source).resolve())} if from_run else {})}
        return with_adapter(model, adapter, dropout, seed), pretrained, None
    model.load_state_dict(online, strict=True)
    return model, pretrained, {"weights": ema, **counters}


def _counters(path: Path, run_manifest) -> dict:
    """The EMA counters of a pretrained file: upstream's keep them in the file, our runs' in the training state."""
    if run_manifest is None:
        return ema_counters(path)
    state = state_path(path.parent.parent, int(path.stem.split("_")[1]))
    if not state.is_file():  # an adopted run's checkpoint: no training happened, so no state was saved
        return {}
    state = load_train_state(state)
    return {"step": state["ema_step"], "initted": state["ema_initted"]}


def sample_writer(cfg: dict, spec: dict, clip, accelerator):
    if not (cfg["train"]["log_samples"] and accelerator.is_main_process):
        return None
    from .samples import SampleWriter

    return SampleWriter(cfg, spec, clip, accelerator.device)


def start(cfg: dict) -> tuple[Path, dict]:
    """A new run: config, data, vocab, pretrained weights and vocoder are all checked before its folder
    exists; rank 0 writes the folder and hands the manifest to the other ranks (which never read it)."""
    from accelerate.utils import broadcast_object_list, set_seed

    check_trainable()
    lora = cfg["adapter"]["kind"] == "lora"
    if lora and not cfg["pretrained"]:
        raise UserError("adapter=lora trains an adapter on a pretrained base, and pretrained=null gives it none; pass "
                        "pretrained=<file, hf:// URL or run folder> (the model config names one), or adapter=none", code="config")
    accelerator = make_accelerator(cfg)
    set_seed(cfg["train"]["seed"])
    # every rank must agree on the folder rank 0 creates (a time-stamped default differs between processes)
    run_dir = run_path(cfg["run"]["root"], broadcast_object_list([cfg["run"]["name"]])[0])
    cfg = {**cfg, "run": {**cfg["run"], "name": run_dir.name}}
    name = cfg["model"]["name"]
    base_vocab, _ = read_vocab(cfg["model"]["vocab"] or default_vocab_path())
    base_spec = model_spec(cfg["model"], base_vocab)
    clips, data = load_clips(cfg["data"], base_spec)
    first = clips[0]  # the dataset's reference clip (reference.wav), whichever side of the split it falls on
    clips, held = split(clips, cfg["data"]["val_clips"])
    check_early_stop(cfg, held)
    if held:
        data["val"] = split_record(held)
    hop, sr = base_spec["mel"]["hop_length"], base_spec["mel"]["target_sample_rate"]
    optimizer_cls = optimizer_class(cfg["optim"]["name"])  # a missing bitsandbytes fails here, before the folder
    vocab, added = settle_vocab(clips, base_vocab, cfg["vocab"], name)
    spec = model_spec(cfg["model"], vocab)
    if added:
        spec["vocab"]["extended_from"] = {**base_spec["vocab"], "added": added}
    if lora:  # the rows of appended symbols train whole (text-embedding row i + 1 is symbol i; row 0 is filler)
        spec["adapter"] = adapter_spec(cfg["adapter"], list(range(len(base_vocab) + 1, len(vocab) + 1)))
    model, pretrained, ema_start = initial_model(spec, vocab, cfg["pretrained"], name, len(added),
                                                 cfg["train"]["seed"], dropout=cfg["adapter"]["dropout"])
    cfg, probe = fit_budget(cfg, model, clips, accelerator, optimizer_cls, hop / sr)
    samples = sample_writer(cfg, spec, first, accelerator)
    reference = load_audio(data.pop("reference"), sr)
    accelerator.wait_for_everyone()  # no rank may see the folder rank 0 is about to create as "existing"

    # a LoRA run's fingerprint is its adapter's (the base's is under pretrained)
    body = manifest_body(spec, cfg, pretrained, data, first.text, fingerprint(trained_state(model)),
                         **({"batch_probe": probe} if probe else {}))
    created = {}

    def create():
        if accelerator.is_main_process:
            created["manifest"], created["lock"] = create_run(run_dir, body, vocab, reference, sr)

    _on_every_rank(create)  # rank 0's refusal (a folder that appeared, no room) stops every rank
    manifest, lock = broadcast_object_list([created.get("manifest")])[0], created.get("lock")
    try:
        result = Trainer(cfg, accelerator, model, clips, run_dir, manifest, samples, held, ema_start).fit()
    finally:
        if lock:
            lock.release()
    return run_dir, finish(run_dir, result, accelerator)


def check_early_stop(cfg: dict, held) -> None:
    if cfg["train"]["early_stop"]["patience"] and not held:
        raise UserError(f"train.early_stop.patience={cfg['train']['early_stop']['patience']} counts validations of "
                        "the held-out loss, and this run holds no clips out: add data.val_clips=N (for example 8)",
                        code="config")


def fit_budget(cfg: dict, model, clips, accelerator, optimizer_cls, hop_seconds: float) -> tuple[dict, dict | None]:
    """The config with data.frames_per_batch=auto measured into a number (and the measurement), checked
    against the longest clip."""
    probe = None
    if cfg["data"]["frames_per_batch"] == "auto":
        from .memory import choose_budget

        probe = choose_budget(model, clips, cfg, accelerator, optimizer_cls)
        cfg = {**cfg, "data": {**cfg["data"], "frames_per_batch": probe["frames_per_batch"]}}
    check_frame_budget(clips, cfg["data"], hop_seconds)
    return cfg, probe


def finish(run_dir: Path, result: dict, accelerator) -> dict:
    """After training (finished or stopped), rank 0 loads the last checkpoint through inference's own path:
    manifest, the one builder, header pre-flight, binding, strict load with the tensor hashes, both weight
    sets. A failure is a bug of this tool, and says which check failed."""
    if not accelerator.is_main_process:
        return result
    for weights in ("ema", "online"):
        try:
            _, _, path = load_run(run_dir, "last", weights)
        except UserError as e:
            raise UserError(f"the final checkpoint of {run_dir} fails inference's loading path ({weights} weights): "
                            f"{e} -- a bug of f5tune, please report it", code="internal")
    return {**result, "verified": f"verified: {path} loads as inference loads it (manifest, builder, header, "
                                  "binding, strict load, tensor hashes; ema and online)"}


# ---- resume -----------------------------------------------------------------------------------------

def latest_intact(run_dir: Path, manifest: dict):
    """The newest checkpoint whose weights (checked against their hashes) and training state both read:
    (update, state, online, ema, damaged). Update 0 and no state when none is intact (a run killed before
    its first save starts again). A checkpoint bound to another run, or to none, stops the resume: it was
    put there by hand and is left alone."""
    damaged = []
    for update, path in sorted(list_checkpoints(run_dir).items(), reverse=True):
        try:
            shapes, meta = header(path)
            error = binding_error(meta, manifest, run_dir, path, strict=True)
            if error:
                raise UserError(f"{error}: it does not belong in {run_dir / CKPT_DIR}; move it out and resume again "
                                "(it is left as it is)", code="binding")
            state = load_train_state(state_path(run_dir, update))
            return update, state, load_weights(path, "online"), load_weights(path, "ema"), damaged
        except DamagedFile as e:
            print(f"warning: checkpoint {update} of {run_dir} is damaged ({str(e).split(': ', 1)[-1][:150]}); "
                  "trying an older one", file=sys.stderr)
            damaged.append(update)
    return 0, None, None, None, damaged


def move_aside(run_dir: Path, update: int) -> None:
    """Rename a damaged checkpoint to *.damaged: kept for the user, but no longer the run's `last`
    checkpoint nor counted by keep_last_n (which would otherwise prune intact ones in its place)."""
    for f in (list_checkpoints(run_dir).get(update), state_path(run_dir, update)):
        if f is not None and f.exists():
            f.rename(f.with_name(f.name + ".damaged"))
            print(f"warning: renamed the damaged {f} to {f.name}.damaged (rename it back to retry it)",
                  file=sys.stderr)


def _on_every_rank(check):
    """Run `check` on every rank and raise the first rank's UserError on all of them: a refusal on one
    rank alone would leave the others waiting in the next collective."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    try:
        check()
        error = None
    except UserError as e:
        error = (f"{e} (rank {state.process_index})" if state.num_processes > 1 else str(e), e.code)
    errors = [e for e in gather_object([error]) if e]
    if errors:
        raise UserError(*errors[0])


def writable(run_dir: Path, names) -> None:
    """Fail before training, not after the first hour, on a file of the run that cannot be written."""
    for name in names:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            if name == CKPT_DIR:
                if not os.access(path, os.W_OK):
                    raise PermissionError(13, "Permission denied")
            else:
                open(path, "a").close()
        except OSError as e:
            raise UserError(f"{path}: cannot be written ({e.strerror}); the run needs it to continue", code="io")


def _visible(run_dir: Path) -> None:
    from accelerate import PartialState

    try:
        read_manifest(run_dir)
    except UserError as e:
        if PartialState().num_processes == 1:
            raise
        raise UserError(f"{e} (a resume reads the run folder in every process: with several machines, keep "
                        "run.root on storage they all share, at the same path)", code=e.code)


def resume(run_dir, overrides: list[str]) -> tuple[Path, dict]:
    """Continue a run from its newest intact checkpoint; only overrides that leave the model alone pass."""
    import torch
    from accelerate import PartialState

    run_dir = Path(run_dir)
    check_trainable()
    PartialState(cpu=not torch.cuda.is_available())  # the process group, as make_accelerator will ask for it
    # every rank reads the run folder: without shared storage on a multi-node launch, say so on all ranks
    _on_every_rank(lambda: _visible(run_dir))
    manifest, current = manifest_and_config(run_dir)
    new_cfg = apply_overrides(current, overrides)
    old, new = flatten(current), flatten(new_cfg)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    refused = {k: v for k, v in changed.items() if kind_of(k) not in (TRAINING, RUNTIME)}
    if refused:
        lines = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in refused.items())
        raise UserError(f"resume={run_dir} refuses changes to the model, its data or its optimizer kind: {lines} "
                        "(start a new run for those, from this one with pretrained=); train.*, optim.* but optim.name, "
                        "logger.*, data.frames_per_batch and runtime switches such as "
                        "model.arch.checkpoint_activations may change", code="resume")

    accelerator = make_accelerator(new_cfg)
    lock = FolderLock(run_dir, "resume") if accelerator.is_main_process else None
    _on_every_rank(lambda: lock and lock.acquire())
    try:
        return run_dir, _resume_locked(run_dir, manifest, new_cfg, changed, accelerator)
    finally:
        if lock:
            lock.release()


def _resume_locked(run_dir: Path, manifest: dict, cfg: dict, changed: dict, accelerator) -> dict:
    from accelerate.utils import set_seed

    set_seed(cfg["train"]["seed"])
    spec = runtime_spec(manifest["model"], cfg)  # amended runtime and training switches take effect
    vocab, _ = read_vocab(run_dir / spec["vocab"]["file"])
    update, state, online, ema, damaged = latest_intact(run_dir, manifest)
    ema_start = None
    if update and spec.get("adapter"):  # the base the manifest names (verified), the adapter on top
        model = adapter_model({**manifest, "model": spec}, vocab, f"the run {run_dir}", cfg["adapter"]["dropout"]).base_model.model
    elif update:
        model = build_checked(manifest, vocab, f"the run {run_dir}", spec=spec)  # every tensor is read below
    else:  # killed before its first save: the manifest holds all it takes to start it again, exactly
        added = len(spec["vocab"].get("extended_from", {}).get("added", []))
        model, _, ema_start = initial_model(spec, vocab, cfg["pretrained"], spec["name"], added, cfg["train"]["seed"],
                                            (manifest["pretrained"] or {}).get("sha256"), cfg["adapter"]["dropout"])
    if update:
        check_fits(manifest["fingerprint"], fingerprint(online), list_checkpoints(run_dir)[update], f"the run {run_dir}")
        load_trained(model, online)
    clips, data = load_clips(cfg["data"], spec)
    first = clips[0]
    clips, held = split(clips, cfg["data"]["val_clips"])
    check_early_stop(cfg, held)
    if data["sha256"] != (manifest["data"] or {}).get("sha256"):
        raise UserError(f"resume={run_dir}: the dataset at data.path changed since the run started (sha256 "
                        f"{str((manifest['data'] or {}).get('sha256'))[:12]} -> {data['sha256'][:12]}); resume needs "
                        f"the same data; for new data start a new run with pretrained={run_dir}", code="resume")
    asked = cfg["data"]["frames_per_batch"]
    cfg, _ = fit_budget(cfg, model, clips, accelerator, optimizer_class(cfg["optim"]["name"]),
                        spec["mel"]["hop_length"] / spec["mel"]["target_sample_rate"])
    if asked == "auto":  # the amendment records the number measured, not the word
        changed["data.frames_per_batch"] = (changed["data.frames_per_batch"][0], cfg["data"]["frames_per_batch"])
    samples = sample_writer(cfg, spec, first, accelerator)
    trainer = Trainer(cfg, accelerator, model, clips, run_dir, manifest, samples, held, ema_start)
    if state is not None:
        trainer.restore(state, ema)
    if trainer.total <= update:
        raise UserError(f"resume={run_dir}: the run is at update {update} and plans {trainer.total}; raise "
                        f"train.max_updates (or train.epochs) above {update} to continue", code="resume")

    if accelerator.is_main_process:
        writable(run_dir, ("train.log", METRICS, STATUS, AMENDMENTS, CKPT_DIR))
        # every check has passed: only now does the run folder change
        for tmp in (run_dir / CKPT_DIR).glob(".*.tmp-*"):  # halves of writes a crash cut short
            tmp.unlink()
        for bad in damaged:
            move_aside(run_dir, bad)
        if changed:
            append_amendment(run_dir, manifest, {k: list(v) for k, v in changed.items()})
        print(f"resuming {run_dir} from update {update}" + (f" with {', '.join(changed)}" if changed else ""),
              file=sys.stderr)
    return finish(run_dir, trainer.fit(), accelerator)
