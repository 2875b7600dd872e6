"""JSON from files and messages anyone may have written."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, with JSON nested too deep for Python's parser (its RecursionError) raised
    as a ValueError like any other invalid JSON (json.JSONDecodeError is one too)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
