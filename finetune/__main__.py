"""python -m finetune model=<name> [experiment=demo] [data=...] [pretrained=...] [train.max_updates=...]
   python -m finetune resume=runs/<name> [train.max_updates=...] [optim.lr=...]
   python -m finetune adopt ckpt=<file> [vocab=<file>] [model=<name> | config=<upstream training yaml>] [run.name=...]
   python -m finetune -m model=a,b optim.lr=1e-5,3e-5 ...   (a sweep: Hydra's multirun)"""
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, finetune_config, plain, precompose, register
from .lock.builder import without_upstream_trainer
from .lock.errors import UserError, user_errors
from .lock.schema import FinetuneConfig

register()


def check_model_choice(argv: list[str]) -> None:
    """Hydra would answer a bad or missing model= with a screenful; one line says it better."""
    if any(a in ("--hydra-help", "--shell-completion") for a in argv):  # these need no config
        return
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("model=")]
    if not chosen:
        also = " (--help too: it shows the config, which needs a model)" if {"-h", "--help"} & set(argv) else ""
        raise UserError(f"model= is required{also}; choose one of {', '.join(models)}", code="usage")
    for value in chosen[-1].split(","):  # multirun: model=a,b
        if value not in models:
            raise UserError(f"model={value}: unknown model; choose one of {', '.join(models)}", code="range")


def run(argv: list[str]) -> tuple[Path, dict] | None:
    """One fine-tune, resume or adoption, in this process: (run folder, summary). None when the command
    line is Hydra's to run (a sweep, or its own flags such as --cfg)."""
    if argv and argv[0] == "adopt":
        from .adopt import adopt

        return adopt(argv[1:]), {}
    resumes = [a for a in argv if a.startswith("resume=")]
    if resumes:
        from .runs import resume

        return resume(resumes[-1].split("=", 1)[1], [a for a in argv if not a.startswith("resume=")])
    check_model_choice(argv)
    if any(a.startswith("-") for a in argv):
        return None
    from .runs import start

    return start(finetune_config(argv))


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> dict:
    """A job of a sweep (or a command line with Hydra's flags)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from .sweep import run_job

        return run_job(cfg, hydra_cfg)
    with user_errors():
        from .runs import start

        config = plain(cfg, FinetuneConfig)
        run_dir, result = start(config)
        if int(os.environ.get("RANK", "0")) == 0:  # one line per job, not per process
            print(f"{result['verified']}\nrun: {run_dir}")
        return {"run": str(run_dir), "model": config["model"]["name"], **result}


def cli(argv: list[str]) -> None:
    try:
        _cli(argv)
    except BaseException as e:
        if close_process_group():
            leave(e)
        raise
    if close_process_group():
        leave(None)


def _cli(argv: list[str]) -> None:
    without_upstream_trainer()
    with user_errors():
        done = run(argv)
        if done is None:
            precompose("finetune", argv, "python -m finetune model=<name> --help")
    if done is None:
        main()
    elif int(os.environ.get("RANK", "0")) == 0:
        if done[1].get("verified"):
            print(done[1]["verified"])
        print(f"run: {done[0]}")


def close_process_group() -> bool:
    """Leave the process group, if this process is one of several; True if it was."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def leave(e: BaseException | None) -> None:
    """End a process of a distributed job now, with the status Python would give it, skipping interpreter
    teardown: the group's threads outlive destroy_process_group (a 2-process resume has as many threads after
    it as before), and one of them taking the GIL while the interpreter finalizes aborts the process
    ("terminate called without an active exception", exit -6) after the work is done and saved."""
    import traceback

    if e is None or isinstance(e, SystemExit):
        status = 0 if e is None or e.code is None else e.code
        if not isinstance(status, int):  # sys.exit("message") prints it and exits 1, as Python does
            print(status, file=sys.stderr)
            status = 1
    else:
        traceback.print_exception(e)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    cli(sys.argv[1:])
