"""Error text shared by every layer: raysweep's errors are one line that names the field or file and the fix."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's first line (at most 200 characters), or its type when it has no text."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
