"""image_eval: every rendered row measured the way papers on audio-to-image generation report it, in one table.

Rows: the true prompt (upper bound) and the training-set mean embedding (lower bound), render_reference's; the
mapper with each sequence fill and its layered row, render's; and the shuffled-audio control: each clip paired with
the mapper's image of another class's sound (no new image: the mapper's images, other pairs), so its paired measures
show what a picture of *a* sound scores, and its FID and KID, set measures, equal the mapper's by construction.

Measures (:mod:`a2i_core.diffusion.field_measures`): AIC over the label texts of the prompt bank, CLIP score
against the label prompt, IIS and its rank form and R@k against the source videos' frames (the download stage's
``download.frames``), FID and KID against those frames (features: ``evaluate.fid_features``). Each figure is given
with the number of images behind it; a clip without a frame is counted and left out of the frame measures only.

Writes the headline numbers (JSON, what ``dvc exp show`` compares), every number with the feature extractors named
(JSON), the table as markdown ready for a report, and every image's scores (CSV).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from a2i_core.core.candidates import HELDOUT
from a2i_core.core.devices import resolve_device
from a2i_core.core.files import atomic_path, write_json, write_text
from a2i_core.core.params import EvaluateParams
from a2i_core.data.frames import load_frames
from a2i_core.diffusion.fid_features import InceptionFeatures
from a2i_core.diffusion.field_measures import fid_kid, frame_ranks, iis, zero_shot_correct
from a2i_core.diffusion.image_scores import ClipScorer, clip_scores
from a2i_core.diffusion.prompt_embeddings import load_text_features

log = logging.getLogger(__name__)
SHUFFLED = "shuffled_audio"
MAPPER = "mapper"
RANKS = (1, 5, 10)  # R@k as papers give it
EMBED_CHUNK = 64  # images decoded at once
ORDER = ["true_prompt", MAPPER, "mapper_fill_", "mapper_layered", SHUFFLED, "baseline_mean"]  # the table's rows


def image_eval(cfg: EvaluateParams, indexed: list[tuple[Path, Path]], text_features: Path, clip: Path, frames: Path,
               metrics: Path, report: Path, table: Path, scores: Path) -> dict:
    """Every row's measures; the rows are those ``indexed`` lists, as (index, images folder) pairs: a render stage's
    index and images each. Returns the report (every number)."""
    rendered = _rendered(indexed)
    tested = rendered[(rendered["row"] == MAPPER) & (rendered["split"] != HELDOUT)]
    shuffled, same_class = shuffled_row(tested, cfg.shuffle_seed)
    rendered = pd.concat([rendered, shuffled], ignore_index=True)
    prompts, _ = load_text_features(text_features)
    device = resolve_device(cfg.device)
    scorer = ClipScorer(clip, device)
    prompt_emb = scorer.embed_prompts(prompts)  # (K, d): the label texts AIC chooses among

    paths = sorted(set(rendered["path"]))  # each image once, however many rows use it
    clips = sorted(set(rendered.loc[rendered["split"] != HELDOUT, "clip_id"]))  # unseen classes: AIC only
    frame_files, frame_problems = usable_frames(frames, clips)
    frame_ids = sorted(frame_files)
    frame_paths = [str(frame_files[c]) for c in frame_ids]
    embedders = [scorer.embed_images]
    if cfg.fid_features == "inception":
        inception = InceptionFeatures.from_file(cfg.inception or "", cfg.inception_sha256, device)
        fid_name = inception.name
        embedders.append(inception.embed)
    else:
        fid_name = f"CLIP image embedding ({cfg.clip_model}, FID_CLIP)"
    image_features, frame_features = embed_files(paths, embedders), embed_files(frame_paths, embedders)
    clip_emb = dict(zip(paths, image_features[0], strict=True))  # path -> (d,)
    frame_clip = frame_features[0]  # (m, d), row i clip frame_ids[i]
    gen_features = dict(zip(paths, image_features[-1], strict=True))  # FID and KID's: CLIP's or Inception's
    frame_features = frame_features[-1]

    def aic(part: pd.DataFrame) -> np.ndarray:
        """(n, d) CLIP embeddings of ``part``'s images, after writing each one's AIC verdict and CLIP score."""
        emb = np.stack([clip_emb[p] for p in part["path"]])
        true = np.array([prompts.index(p) for p in part["prompt"]])
        rendered.loc[part.index, "aic"] = zero_shot_correct(emb, prompt_emb, true).astype(float)
        rendered.loc[part.index, "clip_score"] = clip_scores(emb, prompt_emb, true)
        return emb

    # NaN where not measured: a held-out clip's reference images are drawn for the sheet, not scored
    rendered["aic"] = rendered["clip_score"] = rendered["iis"] = rendered["iis_rank"] = np.nan
    frame_row = {c: i for i, c in enumerate(frame_ids)}
    rows = {}
    for name in _ordered(rendered["row"].unique()):
        part = rendered[(rendered["row"] == name) & (rendered["split"] != HELDOUT)]
        if part.empty:
            continue
        emb = aic(part)  # (n, d)
        has = part["clip_id"].isin(frame_row).to_numpy()
        own = np.array([frame_row[c] for c in part["clip_id"][has]], dtype=int)
        measured = {"images": len(part), "aic": float(rendered.loc[part.index, "aic"].mean()),
                    "clip_score": float(rendered.loc[part.index, "clip_score"].mean()),
                    "images_with_frame": int(has.sum()), "frames": len(frame_ids)}
        if has.any():
            rendered.loc[part.index[has], "iis"] = iis(emb[has], frame_clip[own])
            measured["iis"] = float(rendered.loc[part.index[has], "iis"].mean())
        if has.any() and len(frame_ids) >= 2:
            ranks, recalls = frame_ranks(emb[has], frame_clip, own, RANKS)
            rendered.loc[part.index[has], "iis_rank"] = ranks
            measured["iis_rank"] = float(ranks.mean())
            measured.update({f"r@{k}": v for k, v in recalls.items() if k < len(frame_ids)})
        if name == SHUFFLED and MAPPER in rows:  # the same images: the same set measures, not computed twice
            measured.update({key: rows[MAPPER][key] for key in ("fid", "kid", "kid_std", "note")})
        else:
            distances = fid_kid(np.stack([gen_features[p] for p in part["path"]]), frame_features,
                                cfg.fid_min_images, seed=cfg.shuffle_seed)
            measured.update(fid=distances.fid, kid=distances.kid, kid_std=distances.kid_std, note=distances.note)
        if name == SHUFFLED:
            measured["note"] = "; ".join(filter(None, [
                "the mapper's images paired with other classes' sounds: FID and KID (set measures) are the mapper's",
                f"{same_class} clips paired with their own class (a class holds over half the clips)"
                if same_class else None, measured["note"]]))
        rows[name] = measured
    heldout = rendered[(rendered["row"] == MAPPER) & (rendered["split"] == HELDOUT)]
    if not heldout.empty and MAPPER in rows:  # unseen classes: AIC only (their label texts are in the bank)
        aic(heldout)
        rows[MAPPER]["heldout_aic"] = float(rendered.loc[heldout.index, "aic"].mean())
        rows[MAPPER]["heldout_images"] = len(heldout)

    full = {
        "rows": rows,
        "chance": {"aic": 1 / len(prompts), "iis_rank": 0.5,
                   **{f"r@{k}": k / len(frame_ids) for k in RANKS if frame_ids and k < len(frame_ids)}},
        "labels": len(prompts),
        "features": {"aic": f"CLIP zero-shot over the {len(prompts)} label prompts of the bank ({cfg.clip_model})",
                     "clip_score": f"100 * max(cos, 0), CLIP ({cfg.clip_model}) image and label prompt",
                     "iis": f"CLIP ({cfg.clip_model}) image embeddings of image and frame",
                     "fid_kid": fid_name},
        "frames": {"clips": len(clips), "with_frame": len(frame_ids), "missing": dict(frame_problems)},
    }
    write_json(report, full)
    write_text(table, markdown_table(full))
    write_json(metrics, headline(full))
    with atomic_path(scores) as tmp:
        rendered.drop(columns="path").to_csv(tmp, index=False)
    return full


def headline(full: dict) -> dict:
    """What ``dvc exp show`` compares: each row's AIC; the mapper's FID too (KID where FID is not given). IIS and the
    rest are in the report and the table: `dvc exp show` stays a table a terminal can show.
    Chance is in the report: it changes with no experiment."""
    out = {name: {"aic": row["aic"]} for name, row in full["rows"].items()}
    mapper = full["rows"].get(MAPPER, {})
    for key in ("fid", "heldout_aic"):
        if mapper.get(key) is not None:
            out[MAPPER][key] = mapper[key]
    if MAPPER in out and mapper.get("fid") is None and mapper.get("kid") is not None:
        out[MAPPER]["kid"] = mapper["kid"]
    return out


def markdown_table(full: dict) -> str:
    """The report's table, ready to paste: a line per row, each figure with its image count, and how to read it."""
    columns = ["AIC ↑", "CLIP score ↑", "IIS ↑", "IIS rank ↑", *(f"R@{k} ↑" for k in RANKS), "FID ↓", "KID ↓"]
    keys = ["aic", "clip_score", "iis", "iis_rank", *(f"r@{k}" for k in RANKS), "fid", "kid"]
    lines = ["| row | images | " + " | ".join(columns) + " | images with a frame |",
             "| --- | ---: | " + " | ".join("---:" for _ in columns) + " | ---: |"]
    for name, row in full["rows"].items():
        cells = [_cell(row.get(key), key) for key in keys]
        lines.append(f"| {name.replace('_', ' ')} | {row['images']} | " + " | ".join(cells)
                     + f" | {row['images_with_frame']} |")
    chance = full["chance"]
    lines += ["", f"Chance: AIC {chance['aic']:.3f} (1 of {full['labels']} labels), IIS rank 0.5"
              + "".join(f", R@{k} {chance[f'r@{k}']:.3f}" for k in RANKS if f"r@{k}" in chance)
              + f"; {full['frames']['with_frame']} frames of {full['frames']['clips']} clips.",
              f"Features: AIC, CLIP score and IIS: {full['features']['iis']}; "
              f"FID and KID: {full['features']['fid_kid']}."]
    lines += [f"Note, {name.replace('_', ' ')}: {row['note']}." for name, row in full["rows"].items()
              if row.get("note")]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, key: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if key in ("fid", "kid"):  # FID on unit-norm CLIP features is a few units at most, on Inception's tens to hundreds
        return f"{value:.3g}"
    return f"{value:.1f}" if key == "clip_score" else f"{value:.3f}"


def shuffled_row(mapper: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, int]:
    """The shuffled-audio control: each clip of ``mapper`` given the image of another class's clip (a seeded
    derangement across classes: clips in a random order grouped by class, each taking the image of the clip as many
    places on as the largest class holds); and how many clips had to keep a sound of their own class (only when one
    class holds over half the clips)."""
    n = len(mapper)
    if n < 2:
        return mapper.iloc[:0].assign(row=SHUFFLED), 0
    rng = np.random.default_rng(seed)
    labels = mapper["label"].to_numpy()
    classes = rng.permutation(sorted(set(labels)))
    rank = {label: i for i, label in enumerate(classes)}
    order = sorted(rng.permutation(n), key=lambda i: rank[labels[i]])  # random within each class, classes in turn
    shift = max(Counter(labels).values())
    take = np.empty(n, dtype=int)
    for j, i in enumerate(order):
        take[i] = order[(j + shift) % n]
    same = int(np.sum(labels[take] == labels))
    images = mapper[["file", "path"]].to_numpy()[take]
    shuffled = mapper.assign(row=SHUFFLED, file=images[:, 0], path=images[:, 1])
    return shuffled.reset_index(drop=True), same


def _rendered(indexed: list[tuple[Path, Path]]) -> pd.DataFrame:
    parts = []
    for table, folder in indexed:
        part = pd.read_csv(table, dtype={"clip_id": str, "label": str, "prompt": str, "file": str, "split": str},
                           keep_default_na=False)
        parts.append(part.assign(path=[str(folder / f) for f in part["file"]]))
    return pd.concat(parts, ignore_index=True)


def _ordered(rows: np.ndarray) -> list[str]:
    def place(name: str) -> tuple[int, str]:
        return next((i for i, start in enumerate(ORDER) if name == start or (start.endswith("_") and
                                                                           name.startswith(start))), len(ORDER)), name

    return sorted(rows, key=place)


def _image(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def embed_files(paths: list[str], embedders: list[Callable[[list[Image.Image]], np.ndarray]]) -> list[np.ndarray]:
    """Each embedder's (n, d) features of the images at ``paths``, read EMBED_CHUNK at a time: VGGSound's 15,000
    test clips in six rows at 1024 px would not fit in memory at once."""
    parts: list[list[np.ndarray]] = [[] for _ in embedders]
    for start in range(0, len(paths), EMBED_CHUNK):
        images = [_image(p) for p in paths[start : start + EMBED_CHUNK]]
        for part, embed in zip(parts, embedders, strict=True):
            part.append(embed(images))
    return [np.concatenate(part) if part else np.zeros((0, 0)) for part in parts]


def usable_frames(frames: Path, clips: list[str]) -> tuple[dict[str, Path], Counter]:
    """The frames of ``clips`` that open as images (decoded whole once, then let go); what is missing, by why (one
    log line each kind)."""
    found, problems = {}, Counter()
    on_disk = load_frames(frames) if frames.is_dir() else {}
    for clip_id in clips:
        path = on_disk.get(clip_id)
        if path is None:
            problems["no frame"] += 1
            continue
        try:
            _image(str(path))
            found[clip_id] = path
        except (UnidentifiedImageError, OSError) as err:
            problems["frame not an image"] += 1
            log.debug("%s: %s", path, err)
    for why, count in sorted(problems.items()):
        log.info("%d of %d clips without a frame (%s): left out of IIS, R@k, FID and KID, kept for AIC and CLIP "
                 "score", count, len(clips), why)
    return found, problems
