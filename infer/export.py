"""One portable file from a run: the weights, with the manifest and vocab in its safetensors metadata."""
import sys
from pathlib import Path

from safetensors.torch import save_file

from finetune.lock.checkpoints import header, load_weights
from finetune.lock.errors import UserError
from finetune.lock.files import atomic_write
from finetune.lock.load import EXPORT_FORMAT, load_run
from finetune.lock.manifest import dump


def export(cfg: dict) -> Path:
    """layout=f5tune: bare model keys + manifest/vocab metadata, for `python -m infer model_file=`.
    layout=upstream: `ema_model.*` keys as on the hub, plus a vocab file beside it, for upstream's loader."""
    if not cfg["run"] or not cfg["out"]:
        raise UserError("export needs run=runs/<name> and out=<file>.safetensors")
    out = Path(cfg["out"])
    if out.suffix != ".safetensors":
        raise UserError(f"out={out}: the exported file must end in .safetensors")
    vocab_out = out.with_name(out.stem + "_vocab.txt")  # layout=upstream writes it beside the weights
    for f in (out, vocab_out) if cfg["layout"] == "upstream" else (out,):
        if f.exists():
            raise UserError(f"out={out}: {f} exists; an export never overwrites a file")
    model, manifest, ckpt = load_run(cfg["run"], str(cfg["ckpt"]), cfg["weights"])
    weights = {k: v.contiguous() for k, v in load_weights(ckpt, cfg["weights"]).items()}
    vocab = Path(cfg["run"]) / manifest["model"]["vocab"]["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg["layout"] == "upstream":
        # upstream's load_checkpoint strips `ema_model.` from safetensors files whatever they hold
        tensors, meta = {f"ema_model.{k}": v for k, v in weights.items()}, {}
        atomic_write(vocab_out, lambda tmp: Path(tmp).write_bytes(vocab.read_bytes()))
        print(f"vocab: {vocab_out}", file=sys.stderr)
    else:
        tensors = weights
        meta = {"format": EXPORT_FORMAT, "manifest": dump(manifest), "vocab": vocab.read_text(encoding="utf-8"),
                "weights": cfg["weights"], "source_checkpoint": ckpt.name,
                "update": header(ckpt)[1].get("update", "unknown"), "manifest_sha256": manifest["sha256"]}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return out
