"""mixtures: seeded two-source mixtures of test clips of different classes (at each level ratio, and hard-panned
stereo ones), each answered and drawn as `a2i generate` answers and draws a sound, scored beside the single-embedding
answer and image of the same mixture.

Measured: recall@2 of the two labels from each multi-label answer (the label head, the decomposition over the prompt
bank, and the single embedding's two nearest prompts); the share of images whose zero-shot top-2 (CLIP over the prompt
bank) holds both sounds, layered and single; and for the panned mixtures, the share of image halves whose zero-shot
top-1 is their side's sound, with stereo placement, with the score layout, and for the single image.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.core.audio_io import SAMPLE_RATE
from a2i_core.core.devices import resolve_device
from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_dir, atomic_path, write_json
from a2i_core.core.params import LayersParams, MixturesParams, RenderParams
from a2i_core.core.retrieval import nearest_rows
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.image_scores import ClipScorer
from a2i_core.diffusion.images import contact_sheet, save_image
from a2i_core.diffusion.render import RenderSettings
from a2i_core.layers.answer import recall_at_2
from a2i_core.layers.draw import record, scorer
from a2i_core.layers.mixtures import build_mixtures, write_mixture
from a2i_core.mapper.model import predict_clips
from a2i_core.pipeline.clips import test_clips
from a2i_core.serve.generate import Sound, SoundToImage
from a2i_core.serve.results import render_settings

log = logging.getLogger(__name__)
TABLE_NAME = "mixtures.csv"
# What metrics/mixtures.json holds (`dvc exp show` compares them): the layered answer's recall@2 at the first level
# ratio (0 dB) and the panned halves with stereo placement; the report has the rest, the single embedding's beside.
HEADLINE = ("recall_at_2", "halves_stereo")
REPORTED = ("recall_at_2_head", "recall_at_2_nnls", "recall_at_2_single", "top2_both_layered", "top2_both_single",
            "halves_score", "halves_single")
ANSWERS = ("head", "nnls", "single")
SHEET_MIXTURES = 4  # panned mixtures on the sheet: single | layered by score | layered by stereo


def build_set(cfg: MixturesParams, candidates: Path, audio: Path, out: Path) -> str | None:
    """The mixtures, written whole into ``out`` (a WAV each and mixtures.csv); or none, and the reason, when the test
    split cannot make them (a folder of your own sounds of one class): the pipeline goes on without them."""
    clips = test_clips(candidates, audio)
    try:
        mixtures = build_mixtures(clips, cfg, SAMPLE_RATE)
        reason = None
    except A2IError as err:
        mixtures, reason = [], str(err)
        log.warning("mixtures: none built: %s; their metrics are null", reason)
    with atomic_dir(out) as tmp:
        for m in mixtures:
            write_mixture(m, tmp / f"{m.name}.wav")
        pd.DataFrame([{"name": m.name, "file": f"{m.name}.wav", "first": m.first, "second": m.second, "db": m.db,
                       "panned": m.panned} for m in mixtures],
                     columns=["name", "file", "first", "second", "db", "panned"]).to_csv(tmp / TABLE_NAME, index=False)
    return reason


def mixtures_eval(cfg: LayersParams, render: RenderParams, clip_device: str, candidates: Path, audio: Path,
                  mapper_dir: Path, audio_encoder: Path, sd3: Path, clip: Path, label_head: Path, mixtures: Path,
                  images: Path, metrics: Path, report: Path, scores: Path, sheet: Path) -> dict:
    """Build the mixtures, answer and draw each, score them; writes ``metrics`` (headline), ``report`` (every number,
    per level), ``scores`` (a line per mixture), the images under ``images`` and ``sheet``."""
    reason = build_set(cfg.eval, candidates, audio, mixtures)
    table = pd.read_csv(mixtures / TABLE_NAME, keep_default_na=False)
    full: dict = {key: None for key in (*HEADLINE, *REPORTED)} | {"mixtures": len(table), "skipped": reason}
    rows: list[dict] = []
    with atomic_dir(images) as staging:
        if len(table):
            engine = SoundToImage.from_pretrained(mapper_dir, audio_encoder, sd3, resolve_device(render.device),
                                                  render.dtype, label_head_dir=label_head)
            rows = _answer_and_draw(engine, cfg, render, table, mixtures, staging)
            full |= _score(rows, staging, engine.artifact.prompts, clip, clip_device, cfg)
            _sheet(rows, staging, sheet)
        else:  # an output DVC expects: a sheet saying why it is empty
            with atomic_path(sheet) as tmp:
                contact_sheet([(f"no mixtures: {reason}"[:28], [])], []).save(tmp, format="PNG")
    write_json(metrics, {key: full[key] for key in HEADLINE})
    write_json(report, full)
    with atomic_path(scores) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return full


def _answer_and_draw(engine: SoundToImage, cfg: LayersParams, render: RenderParams, table: pd.DataFrame,
                     mixtures: Path, out: Path) -> list[dict]:
    """Each mixture's answers (one line each) and images: single, layered (the score layout), and for panned ones
    layered by stereo placement too."""
    artifact = engine.artifact
    prompts = artifact.prompts
    settings, fill = RenderSettings.from_params(render), SequenceFill.from_params(render)
    by_score = dataclasses.replace(cfg, layout="score")
    by_stereo = dataclasses.replace(cfg, layout="stereo")
    rows = []
    kinds: dict[str, list[tuple[str, Sound, LayersParams | None]]] = {"single": [], "layered": [], "stereo": []}
    nnls = scorer(artifact, "nnls", None)  # the decomposition's answer, beside the head's and the single one's
    for m in table.itertuples(index=False):
        path = mixtures / m.file
        heard = engine.hear(path)
        pooled, _ = predict_clips(artifact.mapper, [heard.frames])  # (1, P)
        truth = {prompts.index(m.first), prompts.index(m.second)}
        answers = {"nnls": nnls([heard.frames])[0],
                   "single": nearest_rows(pooled, artifact.prompt_pooled, 1)[1][0]}  # the cosines (K,)
        if engine.head is not None:
            answers["head"] = engine.head.scores([heard.frames])[0]
        row = {"name": m.name, "first": m.first, "second": m.second, "db": m.db, "panned": bool(m.panned)}
        row |= {f"recall_at_2_{k}": recall_at_2(v, truth) for k, v in answers.items()}
        rows.append(row)
        kinds["single"].append((m.name, engine.sound(path, heard=heard), None))
        kinds["layered"].append((m.name, engine.sound(path, by_score, heard), by_score))
        if m.panned:
            kinds["stereo"].append((m.name, engine.sound(path, by_stereo, heard), by_stereo))
    used = render_settings(settings, fill, engine.device)
    total, done, start = sum(len(made) for made in kinds.values()), 0, time.monotonic()
    for kind, made in kinds.items():
        for first in range(0, len(made), settings.batch_size):  # saved a batch at a time: memory holds one batch
            chunk = made[first : first + settings.batch_size]
            engine.render([s for _, s, _ in chunk], settings, 1, fill, chunk[0][2])
            for name, sound, layers in chunk:
                file = out / name / f"{kind}.png"
                file.parent.mkdir(parents=True, exist_ok=True)
                own = used if layers is None else {**used, "layering": record(sound.layers, layers)}
                save_image(sound.images[0], file, own, settings.seed)
                sound.images.clear()
            done += len(chunk)
            rate = done / max(time.monotonic() - start, 1e-9)
            log.info("mixtures: %d of %d images drawn (%.2f images/s, about %.0f s left)", done, total, rate,
                     (total - done) / rate)
        for row, (_, sound, _) in zip([r for r in rows if kind != "stereo" or r["panned"]], made, strict=True):
            row[f"layers_{kind}"] = len(sound.layers) if kind != "single" else 1
    return rows


def _score(rows: list[dict], images: Path, prompts: list[str], clip: Path, clip_device: str,
           cfg: LayersParams) -> dict:
    """Zero-shot under CLIP over the prompt bank: does a whole image's top-2 hold both sounds, is each half's top-1
    its side's sound (panned mixtures); then the headline (the first level ratio's, and the panned set's) and every
    level's numbers. Adds each mixture's to its line."""
    scorer = ClipScorer(clip, resolve_device(clip_device))
    prompt_emb = scorer.embed_prompts(prompts)  # (K, d)
    for row in rows:
        first, second = prompts.index(row["first"]), prompts.index(row["second"])
        for kind in ("single", "layered", "stereo"):
            file = images / row["name"] / f"{kind}.png"
            if not file.is_file():
                continue
            with Image.open(file) as opened:
                image = opened.convert("RGB")
            parts = [image, *halves(image)] if row["panned"] else [image]
            sims = scorer.embed_images(parts) @ prompt_emb.T  # (1 or 3, K)
            if kind != "stereo":
                row[f"top2_both_{kind}"] = float({first, second} <= set(np.argsort(-sims[0])[:2].tolist()))
            if row["panned"]:
                side = {"single": "single", "layered": "score", "stereo": "stereo"}[kind]
                row[f"halves_{side}"] = (int(np.argmax(sims[1]) == first) + int(np.argmax(sims[2]) == second)) / 2
    frame = pd.DataFrame(rows)
    mono = frame[~frame["panned"]]
    panned = frame[frame["panned"]]
    levels = {}
    for db, part in mono.groupby("db", sort=False):
        levels[f"{db:g} dB"] = {"mixtures": len(part), **{c: float(part[c].mean()) for c in part.columns
                                                          if c.startswith(("recall_at_2_", "top2_both_"))}}
    first_level = levels.get(f"{cfg.eval.levels_db[0]:g} dB", {})
    out = {key: first_level.get(key) for key in (*HEADLINE, *REPORTED) if key.startswith(("recall_at_2_",
                                                                                       "top2_both_"))}
    out["recall_at_2"] = first_level.get(f"recall_at_2_{cfg.answer}")
    for side in ("stereo", "score", "single"):
        column = f"halves_{side}"
        out[column] = float(panned[column].mean()) if column in panned and len(panned) else None
    if len(panned):
        levels["panned"] = {"mixtures": len(panned), **{c: float(panned[c].mean()) for c in panned.columns
                                                        if c.startswith(("recall_at_2_", "halves_"))}}
    return out | {"answer": cfg.answer, "mode": cfg.mode, "levels": levels, "chance_recall_at_2": 2 / len(prompts),
                  "chance_halves": 1 / len(prompts)}


def halves(image: Image.Image) -> list[Image.Image]:
    """The left and right halves of an image, each stretched back to the image's size: CLIP's processor would
    otherwise crop a half's top and bottom away (it keeps the centre square), and judge a quarter of the picture."""
    w, h = image.size
    return [image.crop(box).resize((w, h), Image.Resampling.BICUBIC) for box in ((0, 0, w // 2, h),
                                                                               (w - w // 2, 0, w, h))]


def _sheet(rows: list[dict], images: Path, sheet: Path) -> None:
    """The first panned mixtures side by side: the single embedding's image, layered left to right by score, and
    layered by stereo placement (README shows it)."""
    columns = ["single", "layered", "stereo"]
    chosen = [r for r in rows if r["panned"]][:SHEET_MIXTURES] or rows[:SHEET_MIXTURES]
    lines = []
    for row in chosen:
        cells = []
        for kind in columns:
            file = images / row["name"] / f"{kind}.png"
            if file.is_file():
                with Image.open(file) as opened:
                    cells.append(opened.convert("RGB"))
        lines.append((f"{_short(row['first'])} (L) + {_short(row['second'])} (R)", cells))
    with atomic_path(sheet) as tmp:
        contact_sheet(lines, ["single embedding", "layered (score)", "layered (stereo)"]).save(tmp, format="PNG")


def _short(prompt: str) -> str:
    return prompt.removeprefix("an image of a ").removeprefix("an image of ")
