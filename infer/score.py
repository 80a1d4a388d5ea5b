"""python -m infer.score run=runs/<name> [ckpt=all|last|N,...] [weights=ema,online] [asr.model=...]
       [speaker.model=...] [quality=true] [seed=0] [nfe_step=32] [max_clips=N] [vocoder=...] [device=...]

Scores a run's checkpoints on its held-out clips (data.val_clips), per checkpoint and weight set:
- validation loss: the trainer's own measure (fixed noise, the run's train.seed), over every held-out clip;
- with asr.model (a Whisper): each held-out clip's text is spoken with a fixed seed in the voice of the next
  held-out clip (cyclically; a single held-out clip is its own prompt), through inference's own code, heard
  by the recogniser, and compared with the text: word and character error rates over all clips (jiwer; case
  and punctuation ignored);
- quality (default on, quality=false turns it off): the speech-quality score (MOS 1-5) of the synthesised speech
  by the predictor the preparation uses (finetune/media/quality.py: offline, its weights ship in its package);
- with speaker.model (a speaker-verification model, e.g. WavLMForXVector): the cosine similarity of the
  synthesised speech's embedding and the prompt clip's. The prompt, not the target clip's own audio, is the
  voice the model was asked to clone: in a dataset of several speakers the two may differ, and a model that
  ignores its prompt must not score well for it.

Scores are merged into runs/<name>/scores.json (finetune/media/scores.py: format and the best rule) and printed
as a table with the best row marked.
"""
import json
import sys
import time
import unicodedata
from pathlib import Path

from finetune.lock.builder import without_upstream_trainer
from finetune.lock.checkpoints import header, pick_checkpoints
from finetune.media.dataset import load_clips, split
from finetune.lock.errors import UserError, user_errors
from finetune.lock.files import check_writable, sha256_bytes
from finetune.lock.manifest import read_manifest
from finetune.lock.schema import from_argv
from finetune.media.scores import best_row, describe_setup, merge_into, read_scores, scores_path

from .config import ScoreConfig

COMMAND = "python -m infer.score"
PROMPT_RULE = "the next held-out clip, cyclically"


def parse(argv: list[str]) -> dict:
    return from_argv(argv, ScoreConfig, COMMAND)


def held_out(run_dir: Path, manifest: dict) -> list:
    """The run's held-out clips, drawn again from its dataset, and checked to be the ones the manifest records."""
    val = (manifest.get("data") or {}).get("val")
    if not val or not val.get("rows"):
        raise UserError(f"{run_dir}: the run holds no clips out of training, so there is nothing to score it on; "
                        "train with data.val_clips=N (for example 8) to score checkpoints", code="scores")
    data_cfg = manifest["config"]["data"]
    if data_cfg["kind"] != "demo":
        data_cfg = {**data_cfg, "path": manifest["data"].get("path") or data_cfg["path"]}
    clips, _ = load_clips(data_cfg, manifest["model"])
    _, held = split(clips, data_cfg["val_clips"])
    if [c.where for c in held] != val["rows"] or [c.sha for c in held] != val["audio_sha256"]:
        raise UserError(f"{data_cfg['path'] or 'the demo clips'}: its held-out clips are no longer the ones {run_dir} "
                        "recorded in its manifest (the dataset changed since training); score on the dataset the run "
                        "was trained on", code="scores")
    return held


def pick(run_dir: Path, ckpt: str, weights: str) -> tuple[dict, list[str]]:
    chosen = pick_checkpoints(run_dir, ckpt)
    sets = list(dict.fromkeys(w.strip() for w in weights.split(",")))
    if not sets or any(w not in ("ema", "online") for w in sets):
        raise UserError(f"weights={weights}: use ema, online or ema,online", code="scores")
    return chosen, sets


def normalize(text: str) -> str:
    """What error rates compare: lower case, no punctuation or symbols, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(ch)[0] in "PSC" else ch for ch in text)
    return " ".join(text.split())


def error_rates(texts: list[str], heard: list[str]) -> tuple[float, float, list[tuple[float, float]]]:
    """(WER, CER) over all clips together, and each clip's."""
    import jiwer

    refs = [normalize(t) or t.strip() for t in texts]
    hyps = [normalize(h) for h in heard]
    per = [(jiwer.process_words(r, h).wer, jiwer.process_characters(r, h).cer) for r, h in zip(refs, hyps)]
    return jiwer.process_words(refs, hyps).wer, jiwer.process_characters(refs, hyps).cer, per


class Listeners:
    """The recogniser and the speaker model (either may be absent), loaded once for every checkpoint."""

    def __init__(self, cfg: dict, device: str):
        from finetune.media import asr as models

        self.asr = self.speaker = self.quality = None
        self.described = {"asr": None, "speaker": None, "quality": None}
        if cfg["quality"]:
            from finetune.media import quality

            self.quality = self.described["quality"] = quality.identity()
            self.device = device
        if cfg["asr"]["model"]:
            models.check_language(cfg["asr"]["language"])
            folder, identity = models.model_folder(cfg["asr"]["model"], "asr.model")
            self.asr = models.recogniser(folder, cfg["asr"]["model"], device)
            self.generate = models.generate_kwargs(self.asr, cfg["asr"]["language"], cfg["asr"]["model"])
            self.described["asr"] = identity | {"language": cfg["asr"]["language"]}
        if cfg["speaker"]["model"]:
            what = "a speaker-verification model (config.json, preprocessor_config.json, *.safetensors), such as " \
                   "microsoft/wavlm-base-plus-sv"
            folder, identity = models.model_folder(cfg["speaker"]["model"], "speaker.model", what,
                                                   "/path/to/local/speaker-model")
            self.speaker = models.SpeakerModel(folder, cfg["speaker"]["model"], device)
            self.described["speaker"] = identity | {"reference": "prompt clip"}
        self.batch_size = cfg["asr"]["batch_size"]
        self.sample_rate = models.SAMPLE_RATE
        self.prompts = {}  # prompt clip -> its speaker embedding

    def __bool__(self):
        return self.asr is not None or self.speaker is not None or self.quality is not None

    def rate(self, wavs: list, sr: int) -> list[float]:
        """The predicted MOS of each synthesised wav."""
        from finetune.media.quality import score

        return score(wavs, sr, self.device)

    def hear(self, wavs: list, sr: int) -> list[str]:
        from finetune.media.audio import resample

        inputs = [{"raw": resample(w, sr, self.sample_rate).numpy(), "sampling_rate": self.sample_rate} for w in wavs]
        out = self.asr(inputs, batch_size=self.batch_size, generate_kwargs=self.generate, return_timestamps=False)
        return [o["text"] for o in out]

    def similarity(self, wav, sr: int, prompt, prompt_wav) -> float:
        import torch

        from finetune.media.audio import resample

        rate = self.speaker.sample_rate
        if prompt.where not in self.prompts:
            self.prompts[prompt.where] = self.speaker.embed(resample(prompt_wav, sr, rate))
        made = self.speaker.embed(resample(wav, sr, rate))
        return torch.nn.functional.cosine_similarity(made, self.prompts[prompt.where], dim=0).item()


def score_one(model, manifest: dict, held: list, cfg: dict, listeners: Listeners, vocoder, audio: dict) -> dict:
    """Validation loss, and with listeners the synthesised speech's error rates and speaker similarity."""
    from finetune.media.validation import validation_loss

    from finetune.media.speak import speak

    row = {"val_loss": validation_loss(model, held, manifest["config"]["train"]["seed"]),
           "wer": None, "cer": None, "speaker_similarity": None, "quality": None, "clips": []}
    if not listeners:
        return row
    spec = manifest["model"]
    sr = spec["mel"]["target_sample_rate"]
    targets = held[:cfg["max_clips"]] if cfg["max_clips"] else held
    wavs, prompts = [], []
    for i, clip in enumerate(targets):
        prompt = targets[(i + 1) % len(targets)]
        wav, _ = speak(model, spec, lambda: vocoder, audio[prompt.where], prompt.text, clip.text, cfg,
                       str(prompt.audio))
        wavs.append(wav)
        prompts.append(prompt)
        row["clips"].append({"row": clip.where, "text": clip.text, "prompt": prompt.where,
                             "seconds": round(wav.shape[-1] / sr, 3)})
    if listeners.asr is not None:
        heard = listeners.hear(wavs, sr)
        row["wer"], row["cer"], per = error_rates([c.text for c in targets], heard)
        for entry, text, (wer, cer) in zip(row["clips"], heard, per):
            entry |= {"heard": text.strip(), "wer": wer, "cer": cer}
    if listeners.quality is not None:
        rated = listeners.rate(wavs, sr)
        row["quality"] = sum(rated) / len(rated)
        for entry, q in zip(row["clips"], rated):
            entry["quality"] = q
    if listeners.speaker is not None:
        sims = [listeners.similarity(w, sr, p, audio[p.where]) for w, p in zip(wavs, prompts)]
        row["speaker_similarity"] = sum(sims) / len(sims)
        for entry, sim in zip(row["clips"], sims):
            entry["similarity"] = sim
    return row


def table(scores: dict, run_dir: Path) -> str:
    best = scores["best"]
    marks = {k: f"{i + 1}" for i, k in enumerate(scores["setups"])}
    lines = [f"scores of {run_dir} ({len(scores['held_out']['rows'])} held-out clips); * best, by {best['by']}",
             f"  {'update':>8} {'weights':<8} {'val_loss':>9} {'WER':>7} {'CER':>7} {'speaker':>8} {'quality':>8}  setup"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in scores["rows"]:
        star = "*" if (r["update"], r["weights"]) == (best["update"], best["weights"]) else " "
        lines.append(f"{star} {r['update']:>8} {r['weights']:<8} {r['val_loss']:>9.4f} {num(r['wer'], '7.3f'):>7} "
                     f"{num(r['cer'], '7.3f'):>7} {num(r['speaker_similarity'], '8.3f'):>8} "
                     f"{num(r.get('quality'), '8.3f'):>8}  {marks[r['setup']]}")
    lines += [f"  {describe_setup(mark, scores['setups'][setup])}" for setup, mark in marks.items()]
    return "\n".join(lines)


def score(cfg: dict) -> tuple[Path, dict]:
    """Score the chosen checkpoints and weight sets; (the scores file, its content)."""
    from finetune.media.audio import load_audio
    from finetune.lock.load import load_run, pick_device

    from .synth import load_run_vocoder

    if not cfg["run"]:
        raise UserError(f"run= is required: {COMMAND} run=runs/<name>", code="usage")
    run_dir = Path(cfg["run"])
    manifest = read_manifest(run_dir)
    read_scores(run_dir, manifest["sha256"])  # a file it cannot merge into, or write, is refused before any work
    check_writable(scores_path(run_dir), "run")
    held = held_out(run_dir, manifest)
    chosen, sets = pick(run_dir, cfg["ckpt"], cfg["weights"])
    device = pick_device(cfg["device"])
    listeners = Listeners(cfg, str(device))
    sr = manifest["model"]["mel"]["target_sample_rate"]
    vocoder, audio = None, {}
    if listeners:
        vocoder = load_run_vocoder(manifest, cfg, device)
        targets = held[:cfg["max_clips"]] if cfg["max_clips"] else held
        audio = {c.where: load_audio(c.audio, sr) for c in targets}
    vocoder_cfg = manifest["config"]["vocoder"]
    described = listeners.described | {
        "synthesis": {k: cfg[k] for k in ("seed", "nfe_step", "cfg_strength", "sway_sampling_coef", "use_epss",
                                          "speed", "max_clips")}
        | {"vocoder": cfg["vocoder"] or vocoder_cfg["kind"],
           "vocoder_path": cfg["vocoder_path"] or vocoder_cfg.get("path"), "prompt": PROMPT_RULE},
        "validation": {"seed": manifest["config"]["train"]["seed"], "clips": len(held)}}
    # rows are comparable when scored alike: the listeners' files count, not where they lie or what they were called
    alike = described | {k: {n: v for n, v in described[k].items() if n not in ("model", "revision")}
                         for k in ("asr", "speaker", "quality") if described[k]}
    setup = sha256_bytes(json.dumps(alike, sort_keys=True).encode())[:16]

    from finetune.media.progress import bar

    rows = []
    progress = bar(total=len(chosen) * len(sets), desc="score", unit="row")
    for update, path in chosen.items():
        meta = header(path)[1]
        for weights in sets:
            started = time.perf_counter()
            model, _, _ = load_run(run_dir, str(update), weights, device)
            row = score_one(model, manifest, held, cfg, listeners, vocoder, audio)
            trainer = meta.get("val_loss" if weights == "online" else "val_loss_ema")
            row = {"update": update, "weights": weights, "checkpoint": path.name,
                   "weights_sha256": meta.get(f"{weights}_sha256"),
                   "val_loss_trainer": float(trainer) if trainer is not None else None} | row
            if trainer is not None and abs(row["val_loss"] - float(trainer)) > 1e-4 * max(1.0, abs(float(trainer))):
                print(f"warning: update {update} {weights}: validation loss {row['val_loss']:.6f} here, "
                      f"{float(trainer):.6f} when trained (another device or precision?)", file=sys.stderr)
            rows.append(row)
            del model
            shown = "".join(f", {k} {row[k]:.3f}" for k in ("wer", "cer", "speaker_similarity", "quality")
                            if row[k] is not None)
            print(f"update {update} {weights}: val_loss {row['val_loss']:.4f}{shown} "
                  f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
            progress.update(1)
    progress.close()

    head = {"run": run_dir.name, "manifest_sha256": manifest["sha256"],
            "held_out": {"rows": [c.where for c in held], "audio_sha256": [c.sha for c in held]}}
    return merge_into(run_dir, manifest["sha256"], rows, setup, described, head)


def main(argv=None) -> None:
    without_upstream_trainer()
    with user_errors():
        path, scores = score(parse(sys.argv[1:] if argv is None else argv))
        print(table(scores, Path(path).parent))
        best, by = best_row(scores["rows"])
        print(f"best: update {best['update']}, {best['weights']} weights (by {by}); "
              f"python -m infer run={Path(path).parent} ckpt=best")
        print(f"scores: {path}")


if __name__ == "__main__":
    main()
