"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from a2i_core.core.urls import redact_text

F = TypeVar("F", bound=Callable[..., object])


class A2IError(Exception):
    """A failure the user can act on (bad param, missing file, no GPU, ...)."""


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
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted: finished outputs are kept, a rerun resumes", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


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
    return redact_text(" ".join(text.split()))[:300]
