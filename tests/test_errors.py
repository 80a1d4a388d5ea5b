"""Every refusal is one `error[<code>]: <message>` line, exit 2; the codes are one list (lock/errors.py CODES),
every code the source raises is on it, and README's table of codes is that list."""
import ast
import re
import shutil

import pytest

from finetune.lock.errors import CODES, UserError
from finetune.lock.files import FolderLock
from tests.conftest import ERROR_LINE, REPO, TINY


def raised_codes() -> set[str]:
    found = set()
    for path in [*(REPO / "finetune").rglob("*.py"), *(REPO / "infer").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant):
                found.add(node.value.value)
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["code"] \
                    and isinstance(node.value, ast.Constant):  # a subclass's code
                found.add(node.value.value)
    return found


def test_every_code_raised_is_listed_and_every_listed_code_is_raised():
    raised = raised_codes()
    assert raised <= set(CODES), raised - set(CODES)
    assert set(CODES) - raised == set(), "a listed code nothing raises"
    with pytest.raises(ValueError, match="unknown error code"):
        UserError("x", code="no-such-code")


def test_readme_lists_the_codes():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z]+)` \|", section, re.M)
    assert table == list(CODES)


def refusal(capsys, command, argv) -> tuple[str, str]:
    with pytest.raises(SystemExit) as e:
        command(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    m = ERROR_LINE.match(err[0])
    assert m, err
    return m.group("code"), err[0]


def test_vocab_range_and_busy_refusals_carry_their_codes(runs, tmp_path, capsys):
    from finetune.__main__ import cli as finetune_cli
    from infer.__main__ import main as infer_main

    code, line = refusal(capsys, finetune_cli, ["model=f5tts_tiny", "optim.lr=-1", f"run.root={tmp_path}", *TINY])
    assert code == "range" and "optim.lr=-1" in line
    code, line = refusal(capsys, infer_main, [f"run={runs['f5']}", "gen_text=ʘʘ ʘ", f"out={tmp_path / 'x.wav'}"])
    assert code == "vocab" and "ʘ" in line
    run = shutil.copytree(runs["f5"], tmp_path / "busy")
    lock = FolderLock(run, "a test")
    lock.acquire()
    try:
        code, line = refusal(capsys, finetune_cli, [f"resume={run}", "train.max_updates=6"])
    finally:
        lock.release()
    assert code == "busy" and "in use by" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
