"""Names made from data: strings from CSVs, archives and metadata are checked here before they name anything.

A label or a file name from outside can hold '/', '..', a newline or 10 KB of text. Such a string never becomes a
path or a command argument itself: :func:`safe_id` makes a readable slug of it plus a short hash of the whole
string, so distinct strings stay distinct and every name is short and plain.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

SLUG_CHARS = 60  # of the readable part; the whole id is at most 69 characters
MAX_LABEL_CHARS = 200
MAX_PROMPT_CHARS = 2000  # a caption; the text encoders truncate far earlier anyway
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,60}")
# Newlines, tabs, escapes (Cc) and the characters that reorder how text is shown (a label that displays as another).
# Other format characters stay: the zero-width joiner of emoji and Persian, the soft hyphen.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_id(text: str) -> str:
    """``'../../tmp/x/evil'`` -> ``'tmp_x_evil_1a2b3c4d'``: letters, digits, '_' and '-' only, at most 69 characters."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:SLUG_CHARS] or "clip"
    return f"{stem}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def safe_name(text: str) -> str:
    """A label as a file name: itself when it is already plain (``dog``, ``church_bell``), else its :func:`safe_id`."""
    return text if SAFE_NAME.fullmatch(text) else safe_id(text)


def text_problem(text: object, max_chars: int) -> str | None:
    """Why ``text`` cannot be a label or a prompt (one short reason), or None when it can."""
    if not isinstance(text, str):
        return f"not text ({type(text).__name__})"
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return f"{len(text)} characters (at most {max_chars})"
    if any(unicodedata.category(c) in ("Cc", "Cs") or c in BIDI_CONTROLS for c in text):
        return "holds control characters"
    return None
