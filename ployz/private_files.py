"""Files that hold secrets (credentials, the membership): written whole and readable by root
only."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Mode 0600, through a temporary file renamed over ``path``: a crash leaves the old file or
    the new one, never a part."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    partial.replace(path)
