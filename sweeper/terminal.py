"""Text that is safe to show on a terminal: the one escaping used by every human output."""

from __future__ import annotations

import unicodedata

# Bidirectional controls and zero-width characters (category Cf) can reorder or hide what a
# terminal shows; C0, DEL and C1 controls (category Cc) can drive it (ESC starts a sequence that
# may retitle the window, move the cursor or, on some terminals, write files).
_UNSAFE = ("Cc", "Cf")


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\u202e``); line breaks
    included, so one value is always one line."""
    if text.isprintable():  # the common case: nothing to escape, no per-character work
        return text
    return "".join(
        _escape(c) if c != " " and unicodedata.category(c) in _UNSAFE else c for c in text
    )


def printable_lines(text: str) -> str:
    """Several lines of output, each made printable; the line breaks between them are kept."""
    return "\n".join(printable(line) for line in text.split("\n"))
