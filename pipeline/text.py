"""Text normalisation applied to every document at ingest."""

from __future__ import annotations

import re
import unicodedata

# NUL, lone surrogates and the non-characters U+FFFE/U+FFFF (and their plane twins) are never text.
_INVALID = re.compile("[\x00\ud800-\udfff\ufffe\uffff\U0001fffe\U0001ffff\U0010fffe\U0010ffff]")
_NEWLINES = re.compile("\r\n?")
# C0 controls that do not occur in text; tab, newline, CR, form feed and escape (ANSI colours) do.
_BINARY_CONTROLS = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]")


def normalize_text(text: str) -> str:
    """NFC, `\\n` newlines, no NUL or invalid code points. Idempotent and total on any `str`.

    Invalid characters go first so that removing them cannot leave a sequence that NFC would then change;
    newlines next, since NFC never creates a CR or NUL.
    """
    text = _INVALID.sub("", text)
    text = _NEWLINES.sub("\n", text)
    return unicodedata.normalize("NFC", text)


def control_fraction(text: str) -> float:
    """Fraction of characters that are control codes never found in text: the binary-content signal."""
    if not text:
        return 0.0
    return len(_BINARY_CONTROLS.findall(text)) / len(text)


def nul_fraction(data: bytes) -> float:
    """Fraction of NUL bytes: binary files (images, archives, compiled code) are full of them."""
    return data.count(0) / len(data) if data else 0.0
