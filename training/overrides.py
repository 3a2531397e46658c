"""`--model_overrides` read into a dict (its own module: both `arguments` and `init_from` read it)."""

from __future__ import annotations

import json


def parse_overrides(text: str | dict | None) -> dict:
    """`--model_overrides` as a dict: JSON object, 'key=value,key=value' (values read as JSON when they parse), or
    already a dict (from a YAML config file)."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--model_overrides is not valid JSON: {error}") from None
        return value
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--model_overrides: expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw.strip()
    return overrides
