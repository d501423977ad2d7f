"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import logging
import sys
import unicodedata
from collections.abc import Callable
from typing import TypeVar

from a2i_core.core.urls import redact_text

F = TypeVar("F", bound=Callable[..., object])


# What must not reach a terminal raw inside a line: C0 and C1 controls (a newline in a file name would start a
# forged "error:" line, ESC would restyle the terminal), format characters (bidi overrides and isolates reorder
# what is shown, zero-width ones hide text), line and paragraph separators, and the lone surrogates that stand
# for a file name's bytes that are not UTF-8 (printing one raises UnicodeEncodeError).
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class A2IError(Exception):
    """A failure the user can act on (bad param, missing file, no GPU, ...)."""


def printable(text: object) -> str:
    """``str(text)`` safe to print as (part of) one line: every character that could break the line or change how
    it reads is written as its Python escape (``\\n``, ``\\x1b``, ``\\u202e``; a file name's byte that is not
    UTF-8 as ``\\xff``). Everything printable, any script's letters included, is kept as it is."""
    text = str(text)
    if text.isprintable():  # the common case, in C
        return text
    return "".join(_escape(c) if unicodedata.category(c) in UNPRINTABLE_CATEGORIES else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if char in NAMED_ESCAPES:
        return NAMED_ESCAPES[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception as a short reason inside a one-line message: its first line, else its type's name."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def exit_cleanly(main: F) -> F:
    """Run ``main``; turn an A2IError or Ctrl-C into one line on stderr and exit code 1/130."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except A2IError as err:
            print(f"error: {printable(err)}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted: finished outputs are kept, a rerun resumes", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class OneLineFormatter(logging.Formatter):
    """Log records whose message is escaped by ``printable``: a path or a reason in a message cannot start a line
    of its own. A traceback, appended after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return printable(super().formatMessage(record))


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # matplotlib (sed_eval's, and Gradio imports it) logs at INFO when it first builds its font cache: not ours to say.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def quiet_hf_libraries() -> None:
    """Silence diffusers/transformers per-file progress bars and import-time notices; our own logs say what runs.

    Call before importing diffusers pipelines: some notices are printed at import.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.disable_progress_bar()
        lib.set_verbosity_error()


def describe(err: BaseException) -> str:
    """An exception as part of one line: what failed, where, why; URLs redacted."""
    if isinstance(err, OSError) and err.errno is not None and err.filename:
        text = f"{err.filename}: [Errno {err.errno}] {err.strerror}"
    elif isinstance(err, (A2IError, OSError)):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return printable(redact_text(" ".join(text.split())))[:300]
