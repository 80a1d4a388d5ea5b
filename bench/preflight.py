"""Header-only shape + binding check against a full load, on an F5TTS_v1_Base-shaped checkpoint; and what
checking the tensors' sha256 while reading costs.

Makes a random-weight F5TTS_v1_Base checkpoint (~1.35 GB, one set of fp32 weights) in a temp folder,
then times: our pre-flight check (safetensors header only), our full load (into the model, as inference
reads, with the hash check and with it switched off), and upstream f5-tts's load_checkpoint on the same
weights in its hub layout. Usage: python bench/preflight.py [repeat]
"""
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, row, timed, timed_cold  # noqa: E402
from finetune.lock.builder import build_model, fingerprint  # noqa: E402
from finetune.lock.checkpoints import header, read_into, save_checkpoint, weights_in  # noqa: E402
from finetune.lock.diagnose import check_fits  # noqa: E402
from bench.makers import VOCAB, spec_of  # noqa: E402


@contextmanager
def unchecked():
    """Reads as usual with the tensor hash switched off: what the check costs is the difference."""
    import finetune.lock.checkpoints as checkpoints

    add, check = checkpoints._Digest.add, checkpoints._check_hash
    checkpoints._Digest.add, checkpoints._check_hash = lambda *a: None, lambda *a: None
    try:
        yield
    finally:
        checkpoints._Digest.add, checkpoints._check_hash = add, check


def main(repeat: int = 5, model_name: str = "f5tts") -> None:
    spec = spec_of(model_name)
    model = build_model(spec, VOCAB)
    expected = fingerprint(model.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        ours = save_checkpoint(tmp, 1, {}, model.state_dict(), "0" * 64)  # EMA weights only, like a hub file
        hub = Path(tmp) / "hub.safetensors"
        save_file({f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(hub))
        size = ours.stat().st_size

        def preflight():
            shapes, meta = header(ours)
            assert meta["manifest_sha256"] == "0" * 64
            check_fits(expected, weights_in(shapes, "ema"), ours, "bench")

        def full_load():
            read_into(model, ours, "ema")

        def full_load_unchecked():
            with unchecked():
                read_into(model, ours, "ema")

        def upstream_load():
            from f5_tts.infer.utils_infer import load_checkpoint

            load_checkpoint(model, str(hub), "cpu", dtype=torch.float32, use_ema=True)

        upstream_load()  # import upstream's inference module once, outside the timings
        a, b, c = timed(preflight, repeat), timed(full_load, repeat), timed(upstream_load, repeat)
        d = timed(full_load_unchecked, repeat)
        cold = [timed_cold(f, 3) for f in (preflight, full_load, upstream_load, full_load_unchecked)]
    print(f"machine: {machine()}; checkpoint {size / 1e9:.2f} GB, {len(expected)} tensors")
    print(row("pre-flight check (header only), warm cache", a))
    print(row("full load, this tool, warm cache", b))
    print(row("full load, this tool, no hash check, warm cache", d))
    print(row("full load, upstream, warm cache", c))
    if cold[0]:
        print(row("pre-flight check, cold cache", cold[0]))
        print(row("full load, this tool, cold cache", cold[1]))
        print(row("full load, upstream, cold cache", cold[2]))
        print(row("full load, this tool, no hash check, cold cache", cold[3]))
        print(f"tensor hash check, cold cache: +{statistics.median(cold[1]) / statistics.median(cold[3]) - 1:.1%} "
              "of a load")
        print(f"pre-flight / upstream full load, cold cache: {statistics.median(cold[0]) / statistics.median(cold[2]):.3%}")
    print(f"tensor hash check, warm cache: +{statistics.median(b) / statistics.median(d) - 1:.1%} of a load "
          f"({(statistics.median(b) - statistics.median(d)) * 1000:.0f} ms for {size / 1e9:.2f} GB)")
    print(f"pre-flight / upstream full load, warm cache: {statistics.median(a) / statistics.median(c):.3%}"
          f" (pre-flight {statistics.median(a) * 1000:.2f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
