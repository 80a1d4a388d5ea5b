"""python -m infer.inspect PATH: what a run folder, checkpoint or exported file holds, without loading tensors."""
import sys
from pathlib import Path

import yaml

from finetune.lock.checkpoints import header, list_checkpoints, weight_sets, weights_in
from finetune.lock.diagnose import arch_of, dims, misfit
from finetune.lock.errors import UserError, user_errors
from finetune.lock.manifest import NAME, content_hash

ARCH_KEYS = ("backbone", "family", "dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers", "vocab_rows",
             "mel_dim")


def _params(shapes: dict) -> int:
    total = 0
    for desc in shapes.values():
        n = 1
        for d in dims(desc):
            n *= d
        total += n
    return total


def _file_shapes(path: Path) -> tuple[dict, dict]:
    if path.suffix == ".safetensors":
        return header(path)
    import torch  # a .pt: mmap reads the pickle's structure, not its tensor data

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise UserError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__})")
    shapes, meta = {}, {}
    for group in ("model_state_dict", "ema_model_state_dict"):
        for k, v in (raw.get(group) or {}).items():
            if isinstance(v, torch.Tensor) and k not in ("initted", "step"):
                prefix = "online." if group == "model_state_dict" else "ema."
                shapes[prefix + k.removeprefix("ema_model.")] = f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
    if not shapes:
        shapes = {k: f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}" for k, v in raw.items()
                  if isinstance(v, torch.Tensor)}
    if "update" in raw or "step" in raw:
        meta["update"] = str(raw.get("update", raw.get("step")))
    return shapes, meta


def file_report(path: Path) -> list[str]:
    shapes, meta = _file_shapes(path)
    weights = weights_in(shapes, "ema") or weights_in(shapes, "online")
    arch = arch_of(weights)
    lines = [f"file: {path}"] + [f"{k}: {arch.get(k)}" for k in ARCH_KEYS]
    lines += [f"parameters: {_params(weights):,}",
              f"weights: {', '.join(weight_sets(shapes, meta))}",
              f"update: {meta.get('update', 'unknown')}"]
    if meta.get("manifest_sha256"):
        lines.append(f"bound to manifest: {meta['manifest_sha256'][:12]} (run {meta.get('run', 'exported')})")
    if meta.get("manifest"):
        body = yaml.safe_load(meta["manifest"])
        ok = content_hash(body) == body.get("sha256")
        lines.append(f"embedded manifest: {body['model']['name']} ({body['model']['family']}), hash {'verifies' if ok else 'DOES NOT verify'}")
    return lines


def run_report(run_dir: Path) -> list[str]:
    path = run_dir / NAME
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a run folder")
    body = yaml.safe_load(path.read_text(encoding="utf-8"))
    ok = content_hash(body) == body.get("sha256")
    spec = body["model"]
    arch = arch_of(body["fingerprint"])
    lines = [f"run: {run_dir}",
             f"manifest: {'verifies' if ok else 'DOES NOT verify (edited after it was written)'} (sha256 {body['sha256'][:12]})",
             f"model: {spec['name']} ({spec['family']}, upstream {spec.get('upstream')}), tokenizer {spec['tokenizer']}",
             ] + [f"{k}: {spec['arch'].get(k, arch.get(k))}" for k in ("dim", "depth", "heads", "ff_mult", "text_dim",
                                                                        "conv_layers", "text_mask_padding", "pe_attn_head")]
    lines += [f"vocab: {spec['vocab']['size']} symbols ({arch['vocab_rows']} text rows), sha256 {spec['vocab']['sha256'][:12]}",
              f"parameters: {_params(body['fingerprint']):,}",
              f"pretrained: {(body.get('pretrained') or {}).get('source')}",
              f"created: {body['created']} with f5-tts {body['versions'].get('f5-tts')}, torch {body['versions'].get('torch')}",
              f"recommended weights: {body.get('recommended_weights')}", "checkpoints:"]
    for update, ckpt in list_checkpoints(run_dir).items():
        try:
            shapes, meta = header(ckpt)
        except UserError:
            lines.append(f"  {update}: DAMAGED ({ckpt.name})")
            continue
        bound = meta.get("manifest_sha256")
        binding = "bound" if bound == body["sha256"] else (f"FOREIGN (run {meta.get('run')})" if bound else "UNBOUND")
        fits = "fits" if not misfit(body["fingerprint"], weights_in(shapes, "ema")) else "DOES NOT FIT"
        kinds = "+".join(weight_sets(shapes, meta))
        lines.append(f"  {update}: {binding}, {fits}, {kinds} ({ckpt.name})")
    return lines


def main(argv: list[str]) -> None:
    with user_errors():
        if len(argv) != 1:
            raise UserError("usage: python -m infer.inspect PATH (a run folder, checkpoint or exported file)")
        path = Path(argv[0])
        if path.is_dir():
            print("\n".join(run_report(path)))
        elif path.is_file():
            print("\n".join(file_report(path)))
        else:
            raise UserError(f"{path}: no such file or folder")


if __name__ == "__main__":
    main(sys.argv[1:])
