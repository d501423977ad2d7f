"""The encoders stage: the frozen SD3 and CLIP that params name, materialised under ``models/`` (the audio encoder's
stage uses ``prepare_pretrained`` from here, through :mod:`a2i_core.audio.prepare`).

``diffusion.model`` and ``evaluate.clip_model`` each name either ``tiny`` (built in code for the offline profile), or
a Hub id or local directory. ``models/sd3/`` and ``models/clip/`` then hold the tiny model itself, or a
``source.json`` pinning a Hub id to the revision resolved now, so that dvc.lock records exactly which snapshot the
features and images came from. No audio code is imported here: editing it must not rerun SD3's stage.

Downstream stages load through :mod:`a2i_core.core.hub` only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_dir
from a2i_core.core.hub import SD3_MARKER, TINY, hub_revision, local_reason, parse_hub_id, write_source
from a2i_core.core.urls import redact
from a2i_core.offline import tiny


def prepare_pretrained(model: str, out_dir: str | Path, marker: str, build_tiny: Callable[[Path], None],
                       check: Callable[[Path], None] | None = None) -> dict:
    """Build the tiny model into ``out_dir``, or pin a Hub id / local directory in ``source.json``; ``check``
    (when given) sees the folder before it is put in place.

    ``marker`` is the file that makes a directory a saved model of this kind (model_index.json, config.json).
    """
    if model == TINY:
        record = {"model": TINY, "revision": None}
    elif Path(model).is_dir():
        if not (Path(model) / marker).is_file():
            raise A2IError(f"{model}: not a saved model directory (no {marker})")
        record = {"model": str(Path(model).resolve()), "revision": None}
    else:  # a path that is not there is never looked up on the Hub, where someone else may own that name
        local = local_reason(model)
        if local is not None:
            raise A2IError(f"{redact(model)}: no such model folder{local}")
        parsed = parse_hub_id(model)
        if parsed is None:
            raise A2IError(f"{redact(model)}: no such model folder, and not a Hub id (owner/name or "
                           "owner/name@revision)")
        repo, revision = parsed
        record = {"model": repo, "revision": hub_revision(repo, revision)}
    with atomic_dir(out_dir) as tmp:  # a reader never finds it half-built
        if model == TINY:
            build_tiny(tmp)
        write_source(tmp, record)
        if check is not None:
            check(tmp)
    return record


def prepare_sd3(model: str, out_dir: str | Path, build_tiny: Callable[[Path], None] = tiny.save_tiny_sd3) -> dict:
    return prepare_pretrained(model, out_dir, SD3_MARKER, build_tiny)


def prepare_clip(model: str, out_dir: str | Path, build_tiny: Callable[[Path], None] = tiny.save_tiny_clip) -> dict:
    return prepare_pretrained(model, out_dir, "config.json", build_tiny)
