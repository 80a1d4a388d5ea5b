"""One portable file from a run: the weights, with the manifest and vocab in its safetensors metadata
(layout=f5tune), or upstream's layout with a vocab file beside it (layout=upstream).

A LoRA run exports its adapter merged into its base (verified by sha256): a whole model, in either layout,
whose embedded manifest describes the merged model and records what was merged. adapter_only=true exports
the adapter alone with the run's manifest (which names the base and its sha256): python -m infer
model_file= loads it on that base."""
import sys
from pathlib import Path

from safetensors.torch import save_file

from finetune.lock.checkpoints import (check_binding, check_weights, header, load_train_state, load_weights,
                                      pick_checkpoint, state_path, tensors_hash)
from finetune.lock.errors import UserError
from finetune.lock.files import atomic_write, check_writable, sha256_bytes
from finetune.lock.load import EXPORT_FORMAT, merged_manifest, model_from
from finetune.lock.manifest import dump, read_manifest
from finetune.media.scores import resolve_ckpt
from finetune.lock.vocab import read_vocab


def ema_counters_of(run_dir: Path, update: int) -> dict:
    """The EMA's counters at a checkpoint, as upstream's EMA state dict keeps them (initted, step): from the
    training state saved with it; a checkpoint without one (adopted) counts its update, initted."""
    import torch

    path = state_path(run_dir, update)
    if path.is_file():
        state = load_train_state(path)
        return {"initted": state["ema_initted"].reshape(()), "step": state["ema_step"].reshape(())}
    return {"initted": torch.tensor(True), "step": torch.tensor(update)}


def export(cfg: dict) -> Path:
    """Checked from the header (binding, names, shapes), then read once (hash-checked) and written.
    layout=upstream: EMA weights as `ema_model.*`, online weights as bare keys, which is how upstream's
    load_model reads each (use_ema=True / False)."""
    if not cfg["run"] or not cfg["out"]:
        raise UserError("export needs run=runs/<name> and out=<file>.safetensors", code="usage")
    out = Path(cfg["out"])
    if out.suffix != ".safetensors":
        raise UserError(f"out={out}: the exported file must end in .safetensors", code="usage")
    vocab_out = out.with_name(out.stem + "_vocab.txt")  # layout=upstream writes it beside the weights
    for f in (out, vocab_out) if cfg["layout"] == "upstream" else (out,):
        if f.exists():
            raise UserError(f"out={out}: {f} exists; an export never overwrites a file", code="exists")
    check_writable(out, "out")
    run_dir = Path(cfg["run"])
    manifest = read_manifest(run_dir)
    which, weights = resolve_ckpt(run_dir, cfg["ckpt"], cfg["weights"])
    symbols, vocab = read_vocab(run_dir / manifest["model"]["vocab"]["file"])
    if sha256_bytes(vocab) != manifest["model"]["vocab"]["sha256"]:
        raise UserError(f"{run_dir / manifest['model']['vocab']['file']}: not the vocab the manifest records; "
                        "restore the run's vocab.txt", code="vocab")
    ckpt = pick_checkpoint(run_dir, which)
    shapes, meta = header(ckpt)
    check_binding(meta, manifest, run_dir, ckpt, cfg["allow_foreign"])
    check_weights(shapes, weights, manifest["fingerprint"], ckpt, f"the run {run_dir}")
    adapter = manifest["model"].get("adapter")
    if cfg["adapter_only"] and not adapter:
        raise UserError(f"adapter_only=true: the run {run_dir} is a full fine-tune, which has no adapter; "
                        "leave adapter_only out to export its model", code="usage")
    if cfg["adapter_only"] and cfg["layout"] == "upstream":
        raise UserError("adapter_only=true: upstream's layout has no place for an adapter; use layout=f5tune", code="usage")
    if adapter and not cfg["adapter_only"]:  # the base, verified, with the adapter merged into it
        model = model_from(manifest, symbols, ckpt, shapes, weights, f"the run {run_dir}", merge=True)
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        manifest = merged_manifest(manifest)  # records the run's manifest hash under merged:
    else:
        tensors = {k: v.contiguous() for k, v in load_weights(ckpt, weights).items()}
    if cfg["layout"] == "upstream":
        prefix = "ema_model." if weights == "ema" else ""
        tensors, extra = {prefix + k: v for k, v in tensors.items()}, {}
        if weights == "ema":  # upstream's Trainer fine-tunes from a file only with the EMA's counters in it
            tensors |= ema_counters_of(run_dir, int(meta.get("update", 0)))
    else:
        extra = {"format": EXPORT_FORMAT, "manifest": dump(manifest), "vocab": vocab.decode("utf-8"),
                 "weights": weights, "source_checkpoint": ckpt.name, "update": meta.get("update", "unknown"),
                 "manifest_sha256": manifest["sha256"], f"{weights}_sha256": tensors_hash(tensors)}
        if cfg["adapter_only"]:
            extra |= {"adapter": adapter["kind"], "base_sha256": manifest["pretrained"]["sha256"],
                      "base_source": manifest["pretrained"]["source"]}
    written = []
    try:
        if cfg["layout"] == "upstream":
            atomic_write(vocab_out, lambda tmp: Path(tmp).write_bytes(vocab))
            written.append(vocab_out)
        atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=extra))
    except BaseException:  # no vocab file left alone: a retry would be refused as an overwrite
        for f in written:
            f.unlink(missing_ok=True)
        raise
    if written:
        print(f"vocab: {vocab_out}", file=sys.stderr)
    return out
