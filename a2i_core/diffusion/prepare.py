"""The encoders stage's work: the frozen SD3 and CLIP that params name, pinned under ``models/``.

``diffusion.model`` and ``evaluate.clip_model`` each name a Hub id (pinned in ``source.json`` to the revision it names
now, so that dvc.lock records exactly which snapshot the features and images came from) or a local directory. The
offline demo's tiny models are built by its own stage (:mod:`a2i_core.offline.encoders`). No audio code is imported
here: editing it must not rerun SD3's stage. Downstream stages load through :mod:`a2i_core.core.hub` only.
"""

from __future__ import annotations

from pathlib import Path

from a2i_core.core.hub import SD3_MARKER, prepare_pretrained

CLIP_MARKER = "config.json"


def prepare_sd3(model: str, out_dir: str | Path) -> dict:
    return prepare_pretrained(model, out_dir, SD3_MARKER)


def prepare_clip(model: str, out_dir: str | Path) -> dict:
    return prepare_pretrained(model, out_dir, CLIP_MARKER)
