"""Hydra glue: the config schemas registered, the command line checked before Hydra runs, composed configs as plain data."""
from pathlib import Path

from .lock.errors import UserError
from .lock.schema import FinetuneConfig, PrepareConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)


NOISE = ("full_key:", "reference_type", "object_type", "To append", "Config search path", "provider=",
         "Set the environment")


def precompose(config_name: str, argv: list[str], help_command: str) -> None:
    """Compose the config once before Hydra does, so a misspelled key, a wrong type or an unknown option
    is one `error:` line rather than Hydra's screenful. A sweep (a=1,2) is checked with its first value.

    Left to Hydra: command lines with its own flags (--help, --cfg, --config-dir, ...), whose meaning
    this check would have to reproduce, and sweeps it cannot expand alone (glob)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, rest = get_args_parser().parse_known_args(argv)
    special = ("help", "hydra_help", "cfg", "info", "shell_completion", "config_dir", "config_path", "config_name",
               "experimental_rerun")
    if rest or any(getattr(args, name) for name in special):
        return
    try:
        overrides = []
        for o in OverridesParser.create().parse_overrides(args.overrides):
            if not o.is_sweep_override():
                overrides.append(o.input_line)
            elif o.is_choice_sweep() or o.is_range_sweep():
                try:
                    overrides.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
                except Exception:  # glob(): needs Hydra's config loader; Hydra checks it
                    pass
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except Exception as e:
        lines, cause = [], e
        while cause is not None:  # Hydra's message and the OmegaConf error under it, noise dropped
            lines += [ln.strip() for ln in str(cause).splitlines() if ln.strip() and not ln.strip().startswith(NOISE)]
            cause = cause.__cause__
        raise UserError(" ".join(dict.fromkeys(lines)) + f" ({help_command} lists every key and option)")


def plain(cfg, schema) -> dict:
    """A composed config re-merged into its schema as plain data: this also rejects `+key=value` extras."""
    from omegaconf import OmegaConf

    try:
        # merge plain data: merging the composed DictConfig would carry its added keys' types along
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg))
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except Exception as e:  # OmegaConf's errors name the key; keep only that line
        raise UserError(f"config: {str(e).strip().splitlines()[0]}")


