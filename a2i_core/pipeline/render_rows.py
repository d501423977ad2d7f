"""render: the mapper's rows of the clips render_reference drew (one per sequence fill, and its layered row: each
clip's sounds drawn as layers), and the contact sheet of these with render_reference's rows. Apart from
:mod:`a2i_core.pipeline.render`, which both render stages share, so that the reference rows do not depend on the
layers' code."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.core.devices import resolve_dtype
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path, write_json
from a2i_core.core.hub import model_identity
from a2i_core.core.params import LayersParams, RenderParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.images import SETTINGS_KEY, SHEET_CELL, contact_sheet, save_png
from a2i_core.diffusion.prompt_embeddings import load_guidance
from a2i_core.diffusion.render import RenderSettings
from a2i_core.layers.answer import decompose
from a2i_core.layers.draw import Layered, bank_fill, conditioning, draw, layers_from_scores, record
from a2i_core.layers.head import LabelHead, audio_part
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict
from a2i_core.mapper.pairs import load_pairs_for
from a2i_core.pipeline.render import INDEX_COLUMNS, Rendered, mapper_rows, pick_clips, publish, render_staged

log = logging.getLogger(__name__)
LAYERED_ROW = "mapper_layered"


@dataclass
class _Engine:
    """What drawing layers needs (``layers.draw.Engine``) of a mapper and SD3 loaded here: the clips are heard
    already (their features), so nothing is heard again."""

    artifact: MapperArtifact
    pipe: object
    device: object
    dtype: object

    def hear(self, path: Path, levels: list[np.ndarray] | None = None, channel: int | None = None) -> None:
        raise A2IError("the render stage draws from the clips' features: it hears no files")


def render_rows(cfg: RenderParams, layering: LayersParams, mapper_dir: Path, label_head: Path, candidates: Path,
                audio_features: Path, text_features: Path, sd3: Path, reference_images: Path, reference_index: Path,
                images: Path, sheet: Path, index: Path, metrics: Path, world: World = SOLO) -> None:
    """The mapper's rows, one per sequence fill, and its layered row (``layering``); and the contact sheet of these
    with render_reference's rows."""
    artifact = MapperArtifact.load(mapper_dir)
    mapper = artifact.mapper
    mapper.config.provenance.check(str(sd3), diffusion_model=model_identity(sd3))
    pairs = load_pairs_for(mapper, candidates, audio_features, text_features, tokens=False)
    picked = pick_clips(pairs, cfg.clips_per_class)  # only the chosen clips' inputs are gathered
    clips = picked.frame
    references = _reference_files(reference_index, reference_images, clips)  # refused now, not after rendering
    head = None
    if layering.answer == "head":  # refused now too: one trained for another bank or other features
        head = LabelHead.from_pretrained(label_head)
        head.check_fits(artifact.prompts, audio_part(mapper.config.provenance))
    pred_pooled, pred_tokens = predict(mapper, *picked.inputs(mapper.config.input))
    guidance = load_guidance(text_features)  # (P,), (L, D): the negative branch, and the empty_prompt fill
    bank = (artifact.prompt_pooled, artifact.prompt_sequences)
    rows = mapper_rows(cfg, pred_pooled, pred_tokens, guidance[1], *bank)
    done = render_staged(cfg, clips, rows, sd3, guidance, images, world)
    if done is None:
        return
    # Each clip's scores: the head reads its windows' mean; the decomposition, the prediction the mapper row draws.
    scores = head.scores([m[None] for m in picked.inputs("mean")[0]]) if head is not None else decompose(
        pred_pooled, artifact.prompt_pooled)  # (n, K)
    device = world.device(cfg.device)
    engine = _Engine(artifact, done.pipe, device, resolve_dtype(cfg.dtype, device))
    extra, layered = _layered_row(cfg, layering, engine, scores, pred_pooled, rows[0].sequence, clips, done)
    done = dataclasses.replace(done, table=pd.concat([done.table, extra], ignore_index=True))
    # Every row is a column of the sheet: the mapper's in the order above, then the references'; every clip a row.
    n, own = len(clips), done.table["file"].tolist()
    sheet_rows = [(f"{clips['label'][i]} ({clips['clip_id'][i]})",
                   [_thumbnail(done.staging / own[r * n + i]) for r in range(len(rows) + 1)]
                   + [_thumbnail(reference_images / files[i]) for files in references.values()]) for i in range(n)]
    columns = [row.name for row in rows] + [LAYERED_ROW] + list(references)
    with atomic_path(sheet) as tmp:
        contact_sheet(sheet_rows, [name.replace("_", " ") for name in columns]).save(tmp, format="PNG")
    publish(done, images, index)
    write_json(metrics, {**done.report, "images": len(done.table), "rows": [*done.report["rows"], LAYERED_ROW],
                         **layered})


def _layered_row(cfg: RenderParams, layering: LayersParams, engine: _Engine, scores: np.ndarray, pooled: np.ndarray,
                 filled: Callable[[int], np.ndarray], clips: pd.DataFrame, done: Rendered) -> tuple[pd.DataFrame, dict]:
    """The mapper's layered row, drawn into ``done``'s staging: each clip's sounds (``layering``) drawn as one image;
    a clip of one sound is the mapper row's own image (the same conditioning draws the same pixels). The clips are
    mono: a stereo layout places every sound in the middle. Returns its lines of the index, and what render.json
    says of it."""
    artifact, n = engine.artifact, len(clips)
    settings = RenderSettings.from_params(cfg)
    (done.staging / LAYERED_ROW).mkdir(parents=True, exist_ok=True)
    fill = bank_fill(artifact, SequenceFill.from_params(cfg))
    files, counts = [], []
    for i in range(n):
        layers, notes = layers_from_scores(scores[i], artifact.prompts, layering)
        for note in notes:
            log.info("%s: %s", clips["clip_id"][i], note)
        file = f"{LAYERED_ROW}/{Path(done.table['file'][i]).name}"  # row 0 is the mapper's: the same names
        if len(layers) == 1:
            shutil.copyfile(done.staging / done.table["file"][i], done.staging / file)
        else:
            conds = conditioning(artifact, layers, pooled[i], filled(i), fill)
            image = draw(engine, Layered(layers, conds), layering, settings, cfg.seed + i)
            save_png(image, done.staging / file, {SETTINGS_KEY: json.dumps(record(layers, layering))})
        files.append(file)
        counts.append(len(layers))
    extra = pd.DataFrame({"row": LAYERED_ROW, "file": files,
                          **{key: clips[key].tolist() for key in ("label", "clip_id", "prompt", "split")}})
    return extra, {"layered": {"mode": layering.mode, "layout": layering.layout, "answer": layering.answer,
                        "clips_of_several_sounds": int(sum(c > 1 for c in counts)),
                        "mean_layers": round(float(np.mean(counts)), 3)}}


def _reference_files(index: Path, images: Path, clips: pd.DataFrame) -> dict[str, list[str]]:
    """Each reference row's image files under ``images``, in the order of ``clips``; an index drawn for other
    clips, or naming a file that is not there, is refused."""
    try:
        table = pd.read_csv(index, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise A2IError(f"{index}: unreadable ({err}): rerun render_reference") from None
    if list(table.columns) != INDEX_COLUMNS:
        raise A2IError(f"{index}: columns {list(table.columns)}, expected {INDEX_COLUMNS}: rerun render_reference")
    want = list(zip(clips["clip_id"], clips["prompt"], strict=True))
    files = {}
    for name, part in table.groupby("row", sort=False):
        if list(zip(part["clip_id"], part["prompt"], strict=True)) != want:
            raise A2IError(f"{index}: row {name!r} was drawn for other clips than these {len(want)}: "
                           "rerun render_reference")
        files[str(name)] = part["file"].tolist()
    missing = [file for names in files.values() for file in names if not (images / file).is_file()]
    if missing:
        raise A2IError(f"{images / missing[0]}: missing ({len(missing)} of the images {index} lists): "
                       "rerun render_reference")
    return files


def _thumbnail(path: Path, size: int = SHEET_CELL) -> Image.Image:
    """A contact-sheet cell, its file closed at once: thousands of images must not hold thousands of handles."""
    with Image.open(path) as image:
        return image.convert("RGB").resize((size, size))
