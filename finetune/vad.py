"""Where speech is, by a trained voice-activity model (slice.detector=vad): silero-vad, whose weights ship inside
its package (silero_vad/data/silero_vad.jit, a TorchScript file of that package; nothing is fetched). For
recordings with background noise (hum, traffic, a room), where a loudness threshold finds sound everywhere and
cuts badly. Only the package's base install is used: its extras pin another torchaudio.

The model hears 16 kHz audio in 32 ms windows and gives each a speech probability; silero-vad's own rule turns
them into stretches of speech (probability over 0.5 starts one, under 0.35 for the pause length ends it).
"""
from functools import lru_cache

SAMPLE_RATE = 16000
WEIGHTS = "silero_vad.jit"


@lru_cache(maxsize=1)
def _model():
    import torch

    import warnings

    threads = torch.get_num_threads()
    import silero_vad  # its import sets torch's thread count to 1 for the whole process: put it back

    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # importlib's path(), torch.jit.load: the package's
        return silero_vad.load_silero_vad(onnx=False)


@lru_cache(maxsize=1)
def identity() -> dict:
    """{"model", "weights_sha256"}: what slicing records, and what a clip's key holds (a new model cuts again)."""
    from importlib.metadata import version
    from importlib.util import find_spec
    from pathlib import Path

    from .lock.files import sha256_file

    spec = find_spec("silero_vad")  # found without importing it
    if spec is None:
        from .lock.errors import UserError

        raise UserError("slice.detector=vad needs the silero-vad package (pip install silero-vad, without extras); "
                        "or use slice.detector=energy", code="data")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    return {"model": f"silero-vad {version('silero-vad')}", "weights_sha256": sha256_file(folder / WEIGHTS)}


def speech_spans(y, sr: int, min_silence: float) -> list[tuple[int, int]]:
    """[(start, end)] in samples at `sr` of the speech in mono `y`; pauses under `min_silence` seconds do not end
    a stretch."""
    import torch
    from silero_vad import get_speech_timestamps_from_probs

    from .media.audio import resample

    x = resample(torch.as_tensor(y, dtype=torch.float32), sr, SAMPLE_RATE)
    model = _model()
    model.reset_states()
    with torch.inference_mode():
        probs = model.audio_forward(x.unsqueeze(0), SAMPLE_RATE)[0].tolist()
    found = get_speech_timestamps_from_probs(probs, sampling_rate=SAMPLE_RATE, audio_length_samples=x.shape[0],
                                             min_silence_duration_ms=int(min_silence * 1000), speech_pad_ms=0)
    n = len(y)
    return [(min(n, round(t["start"] * sr / SAMPLE_RATE)), min(n, round(t["end"] * sr / SAMPLE_RATE)))
            for t in found]
