"""python -m finetune model=<name> [data=...] [pretrained=...] [train.max_updates=...]"""
import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import UserError, user_errors
from .schema import FinetuneConfig, register

register()


def resolve(cfg: DictConfig) -> dict:
    """Re-merge into the schema: this also rejects keys slipped in with `+key=value`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(FinetuneConfig), cfg)
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except Exception as e:  # OmegaConf's errors name the key; keep only that line
        raise UserError(f"config: {str(e).strip().splitlines()[0]}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    with user_errors():
        from .train import finetune

        run_dir = finetune(resolve(cfg))
        print(f"run: {run_dir}")


if __name__ == "__main__":
    main()
