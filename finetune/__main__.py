"""python -m finetune model=<name> [data=...] [pretrained=...] [train.max_updates=...]
   python -m finetune resume=runs/<name> [train.max_updates=...] [optim.lr=...]
   python -m finetune adopt ckpt=<file> [vocab=<file>] [model=<name>] [run.name=...]"""
import os
import sys

import hydra
from omegaconf import DictConfig

from .lock.errors import UserError, user_errors
from .config import CONF_DIR, plain, precompose, register
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
        raise UserError(f"model= is required{also}; choose one of {', '.join(models)}")
    for value in chosen[-1].split(","):  # multirun: model=a,b
        if value not in models:
            raise UserError(f"model={value}: unknown model; choose one of {', '.join(models)}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    with user_errors():
        from .runs import start

        config = plain(cfg, FinetuneConfig)
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and not config["run"]["name"]:
            # jobs of a sweep can start within the same second: the job number keeps their folders apart
            from datetime import datetime

            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            config["run"]["name"] = f"{config['model']['name']}-{config['data']['name']}-{stamp}-job{hydra_cfg.job.num}"
        run_dir = start(config)
        if int(os.environ.get("RANK", "0")) == 0:  # one line per job, not per process
            print(f"run: {run_dir}")
        return {"run": str(run_dir), "model": config["model"]["name"]}


def cli(argv: list[str]) -> None:
    with user_errors():
        if argv and argv[0] == "adopt":
            from .adopt import adopt

            print(f"run: {adopt(argv[1:])}")
            return
        resumes = [a for a in argv if a.startswith("resume=")]
        if resumes:
            from .runs import resume

            print(f"run: {resume(resumes[-1].split('=', 1)[1], [a for a in argv if not a.startswith('resume=')])}")
            return
        check_model_choice(argv)
        precompose("finetune", argv, "python -m finetune model=<name> --help")
    main()


if __name__ == "__main__":
    cli(sys.argv[1:])
