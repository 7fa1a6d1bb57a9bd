"""What a model name and a version string may be: safe as one path component and as a C identifier seed."""

from __future__ import annotations

import re

MODEL_NAME_MAX_LEN = 64
VERSION_MAX_LEN = 32
# Starts with a letter or digit: never "." / ".." / hidden, never a path separator.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,31}$"
_MODEL_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_RE.fullmatch(name):
        raise ValueError(
            f"model name {name!r} must be 1-{MODEL_NAME_MAX_LEN} letters, digits, '_', '.', '-' "
            "starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ValueError(
            f"version {version!r} must be 1-{VERSION_MAX_LEN} letters, digits, '_', '.', '+', '-' "
            "starting with a letter or digit"
        )
    return version
