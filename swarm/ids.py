"""The one grammar every id (node, job, task, message, principal) must follow.

Ids end up in MQTT topics and file names, so they are validated where they enter: at decode time for
messages (`codec.py`), at parse time for what users type (`jobspec.py`). The grammar leaves out every
character that means something to MQTT (`/`, `+`, `#`), to a file system (`/`, NUL) or to a shell, and
`..`, and bounds the length.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

__all__ = ["ID_PATTERN", "MAX_ID_LENGTH", "Id", "IdMarker", "check_id", "is_id", "new_job_id"]

MAX_ID_LENGTH = 200
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:=@-]{0,199}")


class IdMarker:
    """Marks a `str` field of a message as an id (see `Id`); the codec checks such fields."""

    __slots__ = ()


#: A string that must follow the id grammar.
Id = Annotated[str, IdMarker()]


def is_id(text: str) -> bool:
    """Whether `text` follows the id grammar."""
    return ID_PATTERN.fullmatch(text) is not None and ".." not in text


def check_id(text: str, what: str = "id") -> str:
    """Return `text` if it is a valid id; raise ValueError saying why not."""
    if not is_id(text):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ValueError(
            f"{what} {shown!r} is not a valid id: 1-{MAX_ID_LENGTH} characters of letters, digits and"
            " _ . : = @ -, starting with a letter, digit or _, without '..'"
        )
    return text


def new_job_id() -> str:
    """A fresh job id; resubmitting the same id is recognised and never runs twice."""
    return f"job-{secrets.token_hex(6)}"
