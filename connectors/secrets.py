"""Secrets (HMAC keys, SASL passwords) read from a mounted file: never from the repo."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


def secret_from_file(path: Path, setting: str) -> SecretStr:
    """The stripped content of `path`; a ValueError naming `setting` (never the content) if
    it cannot be read or is empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {setting}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{setting} is empty")
    return SecretStr(value)
