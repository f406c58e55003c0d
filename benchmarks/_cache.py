"""Phase cache shared by the benchmark scripts: a finished phase is read back, not recomputed, so an
interrupted benchmark resumes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supernet.atomic import atomic_write_text


def cached(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON at ``path`` if a previous run wrote it, else ``compute()`` written there atomically."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_text(path, json.dumps(value, indent=2))
    return value
