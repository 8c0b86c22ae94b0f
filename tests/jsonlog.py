"""Reading the JSON-lines logs that the test apps' callbacks append to while a test reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of ``path``, parsed; ``[]`` while it does not exist.

    A callback in another process may be half-way through appending a line (a long one is more
    than one ``write``), so the text after the last newline is not a record yet: it is left for
    the next read instead of failing on a cut-off string.
    """
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
