"""What the benchmarks and the tests make to run on: the shipped vocab, model specs as the configs compose them,
tiny models' weights in upstream's checkpoint layouts, speech-like synthetic clips, metadata files, a local
vocos folder and a tiny random Whisper."""
import random
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

from finetune.config import model_config
from finetune.lock.builder import build_model, model_spec
from finetune.lock.vocab import default_vocab_path, read_vocab


WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above quiet hills "
         "and rivers run to the sea under a pale morning light").split()


def speechlike(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A voiced signal with a gliding pitch, a few harmonics and syllable-rate loudness, plus breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    wav = 0.3 * voiced * syllables + 0.01 * rng.standard_normal(t.size)
    return (wav / max(np.abs(wav).max(), 1e-9) * 0.8).astype(np.float32)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_clips(folder, n: int, seed: int = 0, min_s: float = 1.0, max_s: float = 6.0, sr: int = 24000):
    """n wav files in folder/wavs and their texts; returns [(absolute path, text)]."""
    rng = random.Random(seed)
    wavs = Path(folder) / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = rng.uniform(min_s, max_s)
        path = wavs / f"clip_{i:05d}.wav"
        sf.write(path, speechlike(seconds, sr, seed * 100_000 + i), sr)
        rows.append((path.resolve(), sentence(rng, max(2, int(seconds * 2.5)))))
    return rows


def write_metadata(path, rows, header: bool = True) -> Path:
    """upstream's prepare_csv_wavs format: `audio_file|text`, absolute paths."""
    lines = (["audio_file|text"] if header else []) + [f"{audio}|{text}" for audio, text in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_vocos(folder, dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8) -> Path:
    """A local vocos folder (config.yaml + pytorch_model.bin) as vocoder_path= and upstream's
    load_vocoder(is_local=True) read it: charactr/vocos-mel-24khz's layout (its sizes by default),
    random weights (no hub)."""
    import torch
    import yaml

    from finetune.media.vocoder import _build_vocos

    mel = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256}
    config = {
        "feature_extractor": {"class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
                              "init_args": {**mel, "n_mels": 100, "padding": "center"}},
        "backbone": {"class_path": "vocos.models.VocosBackbone",
                     "init_args": {"input_channels": 100, "dim": dim, "intermediate_dim": intermediate_dim,
                                   "num_layers": num_layers}},
        "head": {"class_path": "vocos.heads.ISTFTHead",
                 "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "same"}},
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    torch.save(_build_vocos(folder / "config.yaml").state_dict(), folder / "pytorch_model.bin")
    return folder


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


WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def write_tiny_whisper(folder, max_length: int = 16, seed: int = 0) -> Path:
    """A Whisper with random weights and a byte-level tokenizer of 266 tokens, saved like a hub model folder.

    It goes through the same loading and pipeline code as openai/whisper-large-v3-turbo. Its generation
    config suppresses the end token, control bytes and non-ASCII bytes, so every clip comes out as
    `max_length` - 4 printable characters of gibberish: the path is real, the text is not."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    for s in WHISPER_SPECIALS:
        vocab[s] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS})
    ids = {s: vocab[s] for s in WHISPER_SPECIALS}
    end = ids["<|endoftext|>"]
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=64, pad_token_id=end, bos_token_id=end,
                           eos_token_id=end, decoder_start_token_id=ids["<|startoftranscript|>"],
                           suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    printable = {vocab[byte_chars[b]] for b in range(32, 127)}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=end, pad_token_id=end, max_length=max_length,
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=[i for i in range(len(vocab)) if i not in printable], begin_suppress_tokens=[])
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder
