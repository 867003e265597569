"""Sizes given as integers or as strings such as ``"64MiB"`` or ``"1G"``."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*\Z")


def parse_size(size: int | str) -> int:
    """Return ``size`` in bytes.

    Integers are bytes.  Strings are a number and an optional unit: ``K``,
    ``M``, ``G``, ``T`` and ``KiB``..``TiB`` are powers of 1024, ``KB``..``TB``
    powers of 1000 (case does not matter).

    >>> parse_size("64MiB"), parse_size("1G"), parse_size(4096)
    (67108864, 1073741824, 4096)

    :raises ValueError: for a negative number or an unknown unit.
    :raises TypeError: for anything but ``int`` or ``str``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"size must be an int or a string like '64MiB', not {type(size).__name__}")
    if isinstance(size, int):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        return size
    match = _SIZE.match(size)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read size {size!r}: use bytes or a unit, e.g. '64MiB', '512K', '1G'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(n: int) -> str:
    """Return ``n`` bytes as a short human string (``"64.0 MiB"``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
