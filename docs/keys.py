"""Writes README's tables of each command's keys from their schemas (python docs/keys.py); tests/test_errors.py
checks README holds what this would write, so a key can never be in a command and missing from its table."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tables() -> dict[str, str]:
    from finetune.adopt import AdoptConfig
    from finetune.lock.schema import markdown_table
    from infer.config import InferConfig, ScoreConfig

    return {"python -m infer": markdown_table(InferConfig), "python -m infer.score": markdown_table(ScoreConfig),
            "python -m finetune adopt": markdown_table(AdoptConfig)}


def block(command: str) -> re.Pattern:
    return re.compile(rf"(<!-- keys: {re.escape(command)} -->\n)(.*?)(<!-- /keys -->)", re.S)


def written(readme: str) -> str:
    for command, table in tables().items():
        readme = block(command).sub(lambda m: m.group(1) + table + "\n" + m.group(3), readme)
    return readme


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(written(path.read_text(encoding="utf-8")), encoding="utf-8")
