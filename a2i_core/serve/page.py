"""What the app's tabs share: the one generation slot, how long a visitor's sound is kept, and the status line."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

# SoundToImage shares torch modules, a scheduler and CPU threads between calls, so two concurrent renders
# corrupt each other (measured: wrong images handed to the wrong request). One lock per process, whatever the
# server's concurrency settings, on top of the events' concurrency_limit=1; every tab takes it.
GENERATOR_LOCK = threading.Lock()
# Gradio's sweep: every SWEEP_S, the files it made or took (uploads, results, downloads) last changed over SWEEP_S
# ago are deleted, the example sounds excepted (see app._examples). Long enough for a visitor to look and try another
# seed (a sound a page keeps is renewed at each use), short enough that an abandoned page's files do not pile up.
SWEEP_S = 600


def status_line(gr, message: str | None):
    """The status line under a tab's button (Generate, Make timeline): the refusal, or hidden."""
    return gr.Markdown(f"⚠️ {message}" if message else "", visible=bool(message))


def kept_note(max_upload_mb: float, max_minutes: float, what: str) -> str:
    """Under a tab's audio input: the limits, and how long the server keeps the visitor's ``what``."""
    return (f"Up to {max_upload_mb:g} MB and {max_minutes:g} minutes. The {what} stays on the server for your next "
            f"try while this page uses it, and is deleted when you replace it or after {SWEEP_S // 60} minutes unused.")


def let_go(held: str | None, path: Path | None, release: Callable[[Path], None]) -> None:
    """Release the sound a page kept after its last request (``held``) once the page replaced or removed it."""
    if held and (path is None or os.path.realpath(path) != os.path.realpath(held)):
        release(Path(held))
