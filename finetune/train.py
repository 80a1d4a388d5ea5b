"""Fine-tuning: validate everything, write the run folder and its manifest, then train."""
import math
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from .audio import load_audio, write_wav
from .builder import build_model, fingerprint, model_spec
from .checkpoints import check_fits, read_upstream, resolve_pretrained, save_checkpoint, save_train_state
from .data import ClipDataset, FrameBatches, collate, load_clips
from .errors import UserError
from .files import atomic_write, atomic_write_bytes, sha256_file
from .loggers import RunLogger
from .manifest import read_manifest, write_manifest
from .vocab import default_vocab_path, read_vocab, vocab_bytes

PACKAGES = ("f5-tts", "torch", "torchaudio", "accelerate", "hydra-core", "omegaconf", "safetensors", "ema-pytorch")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def load_pretrained(model, source: str, wanted: str) -> dict:
    path = resolve_pretrained(source)
    sd = read_upstream(path)
    check_fits(fingerprint(model.state_dict()), fingerprint(sd), path, f"model={wanted}")
    model.load_state_dict(sd, strict=True)
    return {"source": source, "file": path.name, "sha256": sha256_file(path)}


def new_run_dir(cfg: dict, accelerator) -> Path:
    from accelerate.utils import broadcast_object_list

    name = cfg["run"]["name"] or (
        f"{cfg['model']['name']}-{cfg['data']['name']}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    name = broadcast_object_list([name])[0]  # every rank must agree on the folder rank 0 creates
    if "/" in name or name in (".", ".."):
        raise UserError(f"run.name={name!r}: a run name is a single folder name")
    run_dir = Path(cfg["run"]["root"]) / name
    if run_dir.exists():
        raise UserError(f"{run_dir} already exists; pick another run.name= (a run folder is never reused)")
    return run_dir


def finetune(cfg: dict) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    tcfg, ocfg = cfg["train"], cfg["optim"]
    accelerator = Accelerator(mixed_precision=tcfg["mixed_precision"],
                              gradient_accumulation_steps=ocfg["grad_accumulation_steps"])
    set_seed(tcfg["seed"])

    # everything that can be wrong is checked before the run folder exists
    vocab, _ = read_vocab(cfg["model"]["vocab"] or default_vocab_path())
    spec = model_spec(cfg["model"], vocab)
    model = build_model(spec, vocab)
    pretrained = load_pretrained(model, cfg["pretrained"], cfg["model"]["name"]) if cfg["pretrained"] else None
    clips = load_clips(cfg["data"], spec)
    batches = FrameBatches([c.frames for c in clips], cfg["data"]["frames_per_batch"],
                           cfg["data"]["max_samples"], tcfg["seed"])
    run_dir = new_run_dir(cfg, accelerator)

    ref = clips[0]
    hop, sr = spec["mel"]["hop_length"], spec["mel"]["target_sample_rate"]
    body = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "vocoder": cfg["vocoder"],
        "pretrained": pretrained,
        "data": {**cfg["data"], "clips": len(clips), "hours": round(sum(c.frames for c in clips) * hop / sr / 3600, 4)},
        "reference": {"audio": "reference.wav", "text": ref.text},
        "recommended_weights": "ema",
        "config": cfg,
        "versions": versions(),
        "fingerprint": fingerprint(model.state_dict()),
    }
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True)
        atomic_write_bytes(run_dir / "vocab.txt", vocab_bytes(vocab))
        wav = load_audio(ref.audio, sr)
        atomic_write(run_dir / "reference.wav", lambda tmp: write_wav(tmp, wav, sr))
        write_manifest(run_dir, body)
    accelerator.wait_for_everyone()
    manifest = read_manifest(run_dir)
    _train(cfg, accelerator, model, clips, batches, run_dir, manifest)
    return run_dir


def _train(cfg, accelerator, model, clips, batches, run_dir, manifest):
    from ema_pytorch import EMA
    from torch.optim import AdamW
    from torch.optim.lr_scheduler import LinearLR, SequentialLR
    from tqdm import tqdm

    tcfg, ocfg = cfg["train"], cfg["optim"]
    ema = None
    if accelerator.is_main_process:
        ema = EMA(model, include_online_model=False, beta=tcfg["ema"]["beta"],
                  update_after_step=tcfg["ema"]["update_after_step"], update_every=tcfg["ema"]["update_every"])
        ema.to(accelerator.device)

    loader = torch.utils.data.DataLoader(ClipDataset(clips), batch_sampler=batches, collate_fn=collate,
                                         num_workers=tcfg["num_workers"])
    per_epoch = math.ceil(len(batches) / max(accelerator.num_processes, 1) / ocfg["grad_accumulation_steps"])
    total = tcfg["max_updates"] or per_epoch * tcfg["epochs"]
    epochs = math.ceil(total / per_epoch)
    # upstream's schedule: linear warmup from ~0, then linear decay to ~0 over the remaining updates
    optimizer = AdamW(model.parameters(), lr=ocfg["lr"], weight_decay=ocfg["weight_decay"])
    warmup = min(ocfg["warmup_updates"], total - 1) if total > 1 else 0
    scheduler = SequentialLR(optimizer, milestones=[max(warmup, 1)], schedulers=[
        LinearLR(optimizer, start_factor=1e-8, end_factor=1.0, total_iters=max(warmup, 1)),
        LinearLR(optimizer, start_factor=1.0, end_factor=1e-8, total_iters=max(total - warmup, 1)),
    ])
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    logger = RunLogger(cfg["logger"]["kind"], run_dir, manifest, cfg["logger"]["project"]) \
        if accelerator.is_main_process else None
    log_file = open(run_dir / "train.log", "a", encoding="utf-8") if accelerator.is_main_process else None
    bar = tqdm(total=total, desc="fine-tune", disable=not accelerator.is_main_process, file=sys.stderr)
    update, loss_value = 0, float("nan")
    model.train()
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss, _, _ = model(batch["mel"], text=batch["text"], lens=batch["lens"])
                accelerator.backward(loss)
                if ocfg["max_grad_norm"] > 0 and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), ocfg["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            update += 1
            loss_value = accelerator.gather(loss.detach()).mean().item()
            lr = scheduler.get_last_lr()[0]
            if accelerator.is_main_process:
                ema.update()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if update % tcfg["log_every"] == 0 or update == total:
                    logger.log({"loss": loss_value, "lr": lr}, update)
                    log_file.write(f"update {update} epoch {epoch} loss {loss_value:.6f} lr {lr:.3e}\n")
                    log_file.flush()
                if update % tcfg["save_every"] == 0 or update == total:
                    _save(run_dir, update, epoch, accelerator, model, ema, optimizer, scheduler, manifest)
            if update >= total:
                break
        if update >= total:
            break
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        logger.close()
        log_file.write(f"done: {update} updates, final loss {loss_value:.6f}\n")
        log_file.close()


def _save(run_dir, update, epoch, accelerator, model, ema, optimizer, scheduler, manifest):
    online = accelerator.unwrap_model(model).state_dict()
    save_checkpoint(run_dir, update, online, ema.ema_model.state_dict(), manifest["sha256"])
    save_train_state(run_dir, update, {
        "update": update, "epoch": epoch,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "ema_step": ema.step.clone(), "ema_initted": ema.initted.clone(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })
