"""Hydra glue: the schemas registered, configs composed through Hydra's compose API, and Hydra's and
OmegaConf's errors turned into one line that names the key."""
from functools import cache
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from .lock.errors import UserError, first_line
from .lock.schema import FinetuneConfig, check
from .prepare_schema import PrepareConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)  # ours (bugs included) are not caught as config errors

# lines of Hydra's and OmegaConf's messages that say nothing about the user's mistake
NOISE = ("full_key:", "reference_type", "object_type", "To append", "Config search path", "provider=",
         "Set the environment", "See https://hydra.cc")


@cache  # once per process: storing converts each schema again (8 ms of each 90 ms compose)
def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)


def one_line(e: BaseException, help_command: str = "") -> str:
    lines, cause = [], e
    while cause is not None:  # Hydra's message and the OmegaConf error under it, noise dropped
        lines += [ln.strip() for ln in str(cause).splitlines() if ln.strip() and not ln.strip().startswith(NOISE)]
        cause = cause.__cause__
    text = " ".join(dict.fromkeys(lines))
    if "LexerNoViableAlt" in text or "token recognition error" in text:
        text += ' (quote a value with spaces or non-ASCII letters: \'run.name="my voice é"\')'
    return text + (f" ({help_command} lists every key and option)" if help_command else "")


def compose_config(name: str, overrides: list[str], help_command: str = ""):
    """The composed config (a DictConfig), or one `error:` line for a misspelled key, a wrong type or an
    unknown option."""
    from hydra import compose, initialize_config_dir

    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except CONFIG_ERRORS as e:
        raise UserError(one_line(e, help_command), code="config")


def plain(cfg, schema) -> dict:
    """A composed config re-merged into its schema as plain data (this also rejects `+key=value` extras),
    interpolations resolved, then every range checked: nothing is written before this passes."""
    from omegaconf import OmegaConf

    try:
        # merge plain data: merging the composed DictConfig would carry its added keys' types along
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg))
        data = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except CONFIG_ERRORS as e:  # OmegaConf's errors name the key; keep only that line
        where = f"{e.full_key}: " if getattr(e, "full_key", None) else ""
        raise UserError(f"config: {where}{first_line(e)}", code="config")
    check(data, schema)
    return data


def finetune_config(overrides: list[str]) -> dict:
    return plain(compose_config("finetune", overrides, "python -m finetune model=<name> --help"), FinetuneConfig)


def model_config(name: str) -> dict:
    """The resolved model section of `model=<name>`, composed as `python -m finetune model=<name>` does."""
    return finetune_config([f"model={name}"])["model"]


def group_option(group: str, option: str) -> dict:
    """One option of a config group (conf/<group>/<option>.yaml with what it inherits), as plain data."""
    from omegaconf import OmegaConf

    cfg = compose_config(f"{group}/{option}", [])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)[group]


def parse_override(arg: str):
    """("a.b", typed value) of a key=value argument, read by Hydra's own override grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except CONFIG_ERRORS as e:
        raise UserError(f"{arg}: {one_line(e)}", code="config")
    if override.is_sweep_override():
        raise UserError(f"{arg}: a sweep has no meaning here; give one value", code="config")
    return override.key_or_group.lstrip("+"), override.value()


def precompose(config_name: str, argv: list[str], help_command: str) -> None:
    """Before a Hydra-run command line (a sweep, or Hydra's own flags), compose it once with each sweep's
    first value so that a bad key is one `error:` line rather than Hydra's screenful.

    Left to Hydra: its own flags (--help, --cfg, --config-dir, ...), whose meaning this check would have to
    reproduce, and sweeps it cannot expand alone (glob)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    if flags:  # Hydra's own (--cfg, --help, -c, --config-dir, ...): their meaning is Hydra's to check
        return
    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = []
        for o in OverridesParser.create().parse_overrides(args):
            if not o.is_sweep_override():
                overrides.append(o.input_line)
            elif (o.is_choice_sweep() or o.is_range_sweep()) and not isinstance(o.value(), Glob):
                # glob() is left out: its values need Hydra's config loader
                overrides.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
            # glob(): needs Hydra's config loader; Hydra checks it
    except CONFIG_ERRORS as e:
        raise UserError(one_line(e, help_command), code="config")
    compose_config(config_name, overrides, help_command)


def _field_type(dotted: str):
    import typing
    from dataclasses import fields, is_dataclass

    schema = FinetuneConfig
    for part in dotted.split("."):
        f = next((f for f in fields(schema) if f.name == part), None) if is_dataclass(schema) else None
        if f is None:
            return None
        args = [a for a in typing.get_args(f.type) if a is not type(None)]
        schema = args[0] if typing.get_origin(f.type) is typing.Union and args else f.type
    return schema


def apply_changes(cfg: dict, changes: dict, source: str = "") -> dict:
    """`cfg` with dotted keys set to new values, then checked against the schema like any config.

    Plain data, never OmegaConf: a value (from the command line or read back from amendments.jsonl) is
    never an interpolation to resolve; a text field given a number takes its text."""
    import copy

    out = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise UserError(f"{source + ': ' if source else ''}{dotted}: not a key of the config", code="usage")
        kind = _field_type(dotted)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        node[last] = value
    check(out, FinetuneConfig, source)
    return out


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """`cfg` with command-line overrides applied: `group=option` replaces a section with that option of
    conf/<group>/ (through Hydra), `a.b=value` sets one key."""
    changes = {}
    for arg in overrides:
        if "=" not in arg:
            raise UserError(f"{arg}: expected key=value", code="usage")
        dotted, value = parse_override(arg)
        if "." not in dotted and (CONF_DIR / dotted).is_dir():
            if not (CONF_DIR / dotted / f"{value}.yaml").is_file():
                options = sorted(p.stem for p in (CONF_DIR / dotted).glob("*.yaml"))
                raise UserError(f"{arg}: no such option; conf/{dotted}/ has {', '.join(options)}", code="config")
            from .lock.schema import flatten

            changes |= {f"{dotted}.{k}": v for k, v in flatten(group_option(dotted, value)).items()}
        else:
            changes[dotted] = value
    return apply_changes(cfg, changes)
