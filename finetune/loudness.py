"""Every prepared clip at one loudness (loudness.target_lufs): its integrated loudness measured as ITU-R BS.1770-4
defines it (K-weighted, gated; pyloudnorm), a gain to the target, and a look-ahead peak limiter so that no sample
passes loudness.peak_db. The mel spectrogram is computed from the result; the audio files are left as they are.

F5-TTS's training data (Emilia) was levelled to about -20 dBFS, and its inference raises a quiet reference clip to
an RMS of 0.1 (-20 dBFS): -20 LUFS puts clean speech at about that level (README: "Loudness").
"""
import numpy as np

LOOKAHEAD = 0.005  # seconds: the limiter's gain falls this long before a peak and recovers as long after it
TOLERANCE = 0.1  # LU: close enough to the target; the limiter can take a little of the gain back, so measure again
ROUNDS = 4


def measure(y: np.ndarray, sr: int) -> float:
    """Integrated loudness in LUFS; -inf for audio all under the absolute gate (-70 LUFS)."""
    import warnings

    import pyloudnorm

    block = min(0.4, y.size / sr)  # a clip under the standard's 400 ms block is measured as one block
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pyloudnorm.Meter(sr, block_size=block).integrated_loudness(y.astype(np.float64)))


def limit(y: np.ndarray, sr: int, ceiling: float) -> np.ndarray:
    """y with no sample over `ceiling` (linear): the gain each sample needs, held over the look-ahead window
    (a minimum filter) and smoothed over a window no wider, so the smoothed gain is never above what any sample
    under it needs."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(y)
    if peak.max() <= ceiling:
        return y
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    w = max(1, round(LOOKAHEAD * sr))
    gain = uniform_filter1d(minimum_filter1d(need, 2 * w + 1, mode="nearest"), 2 * w + 1, mode="nearest")
    return np.clip(y * gain, -ceiling, ceiling)  # the clip only catches rounding


def normalize(y: np.ndarray, sr: int, target_lufs: float, peak_db: float) -> tuple[np.ndarray, dict]:
    """(y at target_lufs with its peaks limited to peak_db dBFS, {"lufs": y's own loudness or None, "limited"}).
    Audio too quiet to measure (silence) is left as it is."""
    lufs = measure(y, sr)
    if not np.isfinite(lufs):
        return y, {"lufs": None, "limited": False}
    ceiling = 10 ** (peak_db / 20)
    gain_db, out = target_lufs - lufs, y
    for _ in range(ROUNDS):
        scaled = y * np.float32(10 ** (gain_db / 20))
        out = limit(scaled, sr, ceiling)
        if out is scaled:  # nothing limited: the gain is exact
            break
        got = measure(out, sr)
        if abs(got - target_lufs) <= TOLERANCE:
            break
        gain_db += target_lufs - got
    return out.astype(np.float32), {"lufs": lufs, "limited": out is not scaled}


def summary(settings: dict, clips: list[dict]) -> dict | None:
    """What dataset.json records: the settings, the meter, and the clips' own loudness before the gain."""
    if settings["target_lufs"] is None:
        return None
    from importlib.metadata import version

    measured = sorted(c["lufs"] for c in clips if c.get("lufs") is not None)
    spread = {"min": round(measured[0], 2), "median": round(float(np.median(measured)), 2),
              "max": round(measured[-1], 2)} if measured else None
    return {"target_lufs": settings["target_lufs"], "peak_db": settings["peak_db"],
            "meter": f"ITU-R BS.1770-4 integrated loudness, pyloudnorm {version('pyloudnorm')}; sample peak limiter",
            "input_lufs": spread, "limited": sum(1 for c in clips if c.get("limited"))}
