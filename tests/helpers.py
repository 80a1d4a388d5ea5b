"""Helpers shared by the tests and the benchmarks: the shipped vocab, model specs as the configs compose
them, tiny models' weights, and upstream's checkpoint layouts written from them."""
import torch
from safetensors.torch import save_file

from finetune.config import model_config
from finetune.lock.builder import build_model, model_spec
from finetune.lock.vocab import default_vocab_path, read_vocab

VOCAB, _ = read_vocab(default_vocab_path())


def spec_of(name: str, vocab=VOCAB) -> dict:
    """The manifest's model section for `model=<name>`, composed exactly as python -m finetune does."""
    return model_spec(model_config(name), vocab)


def loop_config(train: dict, optim: dict, data: dict) -> dict:
    """What finetune.train.Trainer reads, the schema's defaults filled in for every key not given
    (for the same-math runner and the benchmarks that call the loop directly)."""
    from finetune.lock.schema import OptimConfig, TrainConfig, complete

    return {"train": complete(train, TrainConfig), "optim": complete(optim, OptimConfig), "data": data,
            "logger": {"kind": "none", "project": "x"}}


def tiny_state(name="f5tts_tiny", seed=0) -> dict:
    torch.manual_seed(seed)
    return build_model(spec_of(name), VOCAB).state_dict()


def ema_prefixed(sd):
    return {**{f"ema_model.{k}": v for k, v in sd.items()}, "initted": torch.tensor(True), "step": torch.tensor(7)}


def write_layouts(folder, sd) -> dict:
    """The same weights in each layout upstream writes: trainer .pt, EMA-only .pt, DDP .pt, an old .pt with
    mel buffers, and a hub .safetensors."""
    online = {k: v + 1 for k, v in sd.items()}  # distinct online weights: EMA must be the ones read
    files = {
        "trainer.pt": {"model_state_dict": online, "ema_model_state_dict": ema_prefixed(sd),
                       "optimizer_state_dict": {}, "scheduler_state_dict": {}, "update": 10},
        "ema_only.pt": {"ema_model_state_dict": ema_prefixed(sd)},
        "ddp.pt": {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "old.pt": {"ema_model_state_dict": {**ema_prefixed(sd),
                                            "ema_model.mel_spec.mel_stft.mel_scale.fb": torch.zeros(513, 100),
                                            "ema_model.mel_spec.mel_stft.spectrogram.window": torch.zeros(1024)}},
    }
    paths = {}
    for name, obj in files.items():
        paths[name] = folder / name
        torch.save(obj, paths[name])
    paths["hub.safetensors"] = folder / "hub.safetensors"
    save_file({k: v.contiguous() for k, v in ema_prefixed(sd).items()}, str(paths["hub.safetensors"]))
    return paths


def wandb_records(path) -> dict:
    """The records of a wandb offline run file, by kind, parsed with wandb's own protobuf schema. The file
    is a LevelDB-style log: 32 KiB blocks of chunks, each a 7-byte header (crc, length, type) and data."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = open(path, "rb").read(), 32768
    pos, chunk, records = 7, b"", {}  # 7 bytes: the file's own header (":W&B", version)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.setdefault(record.WhichOneof("record_type"), []).append(record)
            chunk = b""
    return records
