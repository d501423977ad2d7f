"""Results as files: one PNG per image with the settings and its seed in the PNG's text (the app's and `a2i
generate`'s alike), and for the app a zip of them, in a new folder of Gradio's cache."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2i_core.core.names import safe_name
from a2i_core.diffusion.images import save_image

if TYPE_CHECKING:  # at run time they would load torch, which the command line's start must not wait for

    from a2i_core.diffusion.fills import SequenceFill
    from a2i_core.diffusion.render import RenderSettings
    from a2i_core.serve.generate import Sound


# Saving a result also removes earlier, empty result folders: never one another request is still filling. The event's
# concurrency_limit=1 does not promise that: Gradio's REST route (/gradio_api/run/run, open unless api_open=False)
# calls the function outside the queue.
_RESULTS_LOCK = threading.Lock()


def render_settings(settings: RenderSettings, fill: SequenceFill, device: object) -> dict[str, Any]:
    """The settings an image is drawn with, as the app shows them and every PNG carries them (with its own seed)."""
    return {"steps": settings.steps, "guidance": settings.guidance, "seed": settings.seed, "size": settings.size,
            "sequence_fill": fill.name, "device": str(device)}


def settings_used(settings: RenderSettings, images: int, fill: SequenceFill, device: object,
                  seconds: float) -> dict[str, Any]:
    """What made a sound's images: ``render_settings``, how many images and how long they took."""
    return {**render_settings(settings, fill, device), "images": images, "render_seconds": round(seconds, 2)}


def save_results(sound: Sound, seeds: list[int], root: Path, used: dict) -> tuple[list[tuple[str, str]], str]:
    """Each image as a PNG (the settings and its seed in the PNG's text) and all of them in one zip, in a new folder
    of Gradio's cache; returns the gallery's (path, caption) pairs and the zip's path.

    Written where Gradio keeps its own results, so Gradio serves them without a copy, tracks them like its own, and
    its sweep (``delete_cache``) and the server's exit remove them with the rest. The sweep deletes files only: the
    earlier result folders it emptied are removed here.
    """
    with _RESULTS_LOCK:
        remove_empty_results(root)
        out = Path(tempfile.mkdtemp(prefix="result-", dir=root))
        stem = safe_name(sound.path.stem)
        try:
            pngs = []
            for image, seed in zip(sound.images, seeds, strict=True):
                pngs.append(out / f"{stem}-seed{seed}.png")
                save_image(image, pngs[-1], used, seed)
            archive = out / f"{stem}-images.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # PNGs are compressed already
                for png in pngs:
                    bundle.write(png, png.name)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # never half a result behind
            raise
    return [(str(png), f"seed {seed}") for png, seed in zip(pngs, seeds, strict=True)], str(archive)


def remove_empty_results(root: Path) -> None:
    """Remove the ``result-*`` folders of ``root`` that are empty (swept); rmdir leaves any that still hold a file."""
    with contextlib.suppress(OSError):
        for folder in root.glob("result-*"):
            with contextlib.suppress(OSError):
                folder.rmdir()
