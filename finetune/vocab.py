"""Vocab files (one symbol per line, line i is token i) and the tokenizers that feed them."""
from pathlib import Path

from .errors import UserError


def default_vocab_path() -> Path:
    from importlib.resources import files

    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def parse_vocab(data: bytes, source: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: vocab is not UTF-8 text; give a vocab.txt with one symbol per line")
    # split on "\n" only: symbols may be characters that str.splitlines() would treat as breaks
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise UserError(f"{source}: vocab is empty; give a vocab.txt with one symbol per line")
    if len(set(tokens)) != len(tokens):
        raise UserError(f"{source}: vocab has duplicate lines; each symbol must appear once")
    return tokens


def read_vocab(path) -> tuple[list[str], bytes]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read vocab ({e.strerror}); check model.vocab=")
    return parse_vocab(data, str(path)), data


def vocab_bytes(tokens: list[str]) -> bytes:
    return "".join(t + "\n" for t in tokens).encode("utf-8")


def tokenize(text: str, tokenizer: str) -> list[str]:
    """Text to the symbols the vocab indexes: upstream's pinyin conversion, or plain characters."""
    if tokenizer == "pinyin":
        from f5_tts.model.utils import convert_char_to_pinyin

        return convert_char_to_pinyin([text])[0]
    return list(text)
