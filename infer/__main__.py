"""python -m infer run=runs/<name> [gen_text=...] [ref_audio=... ref_text=...] [ckpt=last|N|best] [out=...] [...]
   python -m infer model_file=<export>.safetensors [gen_text=...] [...]
   python -m infer export run=runs/<name> out=<file>.safetensors [ckpt=...] [weights=ema|online] [layout=upstream]
                                                                 [adapter_only=true]   (a LoRA run: merged by default)"""
import sys

from finetune.lock.builder import without_upstream_trainer
from finetune.lock.errors import UserError, user_errors
from finetune.lock.schema import from_argv, model_keys

from .config import InferConfig


def parse(argv: list[str]) -> dict:
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~").split(".")[0]
        if key in model_keys():  # the model section and its source: the run's manifest alone decides those
            raise UserError(f"{arg}: the model is fixed by the run's manifest.yaml, which is the only authority "
                            "at inference; drop this override (train a new run to change the model)", code="usage")
    return from_argv(argv, InferConfig, "python -m infer")


def run(argv: list[str]):
    """In this process: the wav (or exported file) written."""
    if argv and argv[0] == "export":
        from .export import export

        return export(parse(argv[1:]))
    from .synth import synthesize

    return synthesize(parse(argv))


def main(argv=None) -> None:
    without_upstream_trainer()
    with user_errors():
        print(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
