"""One exception for bad input: entry points print its message on one line and exit 2."""
import sys
from contextlib import contextmanager


class UserError(Exception):
    pass


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, for a one-line error: its type's name when the message is
    empty (peft, torch and others raise some without one)."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text[:limit] if limit else text


@contextmanager
def user_errors():
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
