"""Files from the Hugging Face hub, failing with one line that says what to pass instead."""
from pathlib import Path

from .errors import UserError, first_line


def hub_file(repo_id: str, filename: str, instead: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry chatter would bury our one-line error
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as e:
        reason = first_line(e)
        raise UserError(f"cannot download {repo_id}/{filename} ({reason[:120]}); {instead}", code="offline")
