"""One exception for bad input: entry points print its message on one line and exit 2."""
import sys
from contextlib import contextmanager


class UserError(Exception):
    pass


@contextmanager
def user_errors():
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
