"""Vocab files (one symbol per line, line i is token i) and the tokenizers that feed them."""
import sys
from pathlib import Path

from .errors import UserError

EMBED = "transformer.text_embed.text_embed.weight"  # rows: vocab size + 1 (token 0 is the filler)


def default_vocab_path() -> Path:
    from importlib.resources import files

    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def parse_vocab(data: bytes, source: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: vocab is not UTF-8 text; give a vocab.txt with one symbol per line", code="vocab")
    # split on "\n" only: symbols may be characters that str.splitlines() would treat as breaks
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise UserError(f"{source}: vocab is empty; give a vocab.txt with one symbol per line", code="vocab")
    if len(set(tokens)) != len(tokens):
        raise UserError(f"{source}: vocab has duplicate lines; each symbol must appear once", code="vocab")
    return tokens


def read_vocab(path) -> tuple[list[str], bytes]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read vocab ({e.strerror}); check model.vocab=", code="io")
    return parse_vocab(data, str(path)), data


def vocab_bytes(tokens: list[str]) -> bytes:
    return "".join(t + "\n" for t in tokens).encode("utf-8")


def tokenize(text: str, tokenizer: str) -> list[str]:
    """Text to the symbols the vocab indexes: upstream's pinyin conversion, or plain characters."""
    if tokenizer == "pinyin":
        from f5_tts.model.utils import convert_char_to_pinyin

        return convert_char_to_pinyin([text])[0]
    return list(text)


def unknown_symbols(clips, vocab: list[str]) -> dict[str, tuple[int, str]]:
    """Symbols of the clips' tokens that the vocab lacks: symbol -> (count, first row using it)."""
    known, found = set(vocab), {}
    for clip in clips:
        for token in clip.tokens:
            if token not in known:
                count, where = found.get(token, (0, clip.where))
                found[token] = (count + 1, where)
    return dict(sorted(found.items(), key=lambda kv: -kv[1][0]))


def settle_vocab(clips, vocab: list[str], choice: dict, model: str) -> tuple[list[str], list[str]]:
    """The vocab a run uses and the symbols it appends, after checking the data's coverage.

    Unknown symbols refuse the run unless vocab.extend (append them) or vocab.accept_unknown (token 0,
    upstream's silent behaviour) is chosen.
    """
    unknown = unknown_symbols(clips, vocab)
    if choice["extend"] and choice["accept_unknown"]:
        raise UserError("vocab.extend=true and vocab.accept_unknown=true exclude each other; choose one", code="vocab")
    if not unknown:
        return vocab, []
    listed = ", ".join(f"{s!r} x{n} (e.g. {where})" for s, (n, where) in list(unknown.items())[:12])
    more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
    if choice["extend"]:
        added = sorted(unknown)
        print(f"vocab: appending {len(added)} symbols to the {len(vocab)} of model={model}: {listed}{more}",
              file=sys.stderr)
        return vocab + added, added
    if choice["accept_unknown"]:
        print(f"warning: {len(unknown)} symbols map to the unknown token 0: {listed}{more}", file=sys.stderr)
        return vocab, []
    raise UserError(f"data: {len(unknown)} symbols are not in the vocab of model={model} ({len(vocab)} symbols): "
                    f"{listed}{more}; add vocab.extend=true to append them (the text embedding grows) or "
                    "vocab.accept_unknown=true to map them to the unknown token 0", code="vocab")


def grow_text_embedding(state_dict: dict, rows: int, seed: int) -> dict:
    """Append `rows` rows to the text embedding: old rows kept exactly, new ones drawn N(0, 1) as upstream does."""
    import torch

    old = state_dict[EMBED]
    new = torch.randn(rows, old.shape[1], generator=torch.Generator().manual_seed(seed)).to(old.dtype)
    return {**state_dict, EMBED: torch.cat([old, new])}
