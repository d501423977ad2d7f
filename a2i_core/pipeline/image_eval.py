"""image_eval: CLIP score and zero-shot class accuracy of every rendered row.

Rows: the mapper's images (with each sequence fill: the render stage's); the true prompt's (upper bound) and the
mean embedding's (lower bound): the render_reference stage's. Zero-shot: is the image closest, under CLIP, to its own
class prompt among all class prompts? The metrics file holds each row's zero-shot accuracy on the test clips (and
the mapper row's on held-out classes' clips, when there are some); the table beside it, every image's CLIP score,
verdict and split (its file under the render stage's images or, for the reference rows, under render_reference's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.core.candidates import HELDOUT
from a2i_core.core.devices import resolve_device
from a2i_core.core.files import atomic_path, write_json
from a2i_core.core.params import EvaluateParams
from a2i_core.diffusion.image_scores import ClipScorer, clip_scores, zero_shot_correct
from a2i_core.diffusion.prompt_embeddings import load_text_features


def image_eval(cfg: EvaluateParams, images: Path, index: Path, reference_images: Path, reference_index: Path,
               text_features: Path, clip: Path, metrics: Path, scores: Path) -> dict:
    parts = [(pd.read_csv(index), images), (pd.read_csv(reference_index), reference_images)]
    table = pd.concat([part for part, _ in parts], ignore_index=True)  # the mapper's rows, then the references'
    paths = [folder / file for part, folder in parts for file in part["file"]]
    prompts, _ = load_text_features(text_features)
    scorer = ClipScorer(clip, resolve_device(cfg.device))
    prompt_emb = scorer.embed_prompts(prompts)  # (K, d)
    image_emb = scorer.embed_images([Image.open(path).convert("RGB") for path in paths])  # (n, d)
    true = np.array([prompts.index(p) for p in table["prompt"]])
    table["clip_score"] = clip_scores(image_emb, prompt_emb, true)
    table["zero_shot"] = zero_shot_correct(image_emb, prompt_emb, true)
    table["cosine"] = np.sum(image_emb * prompt_emb[true], axis=-1)
    heldout = table["split"] == HELDOUT
    report = {row: {"zero_shot_top1": float(table.loc[(table["row"] == row) & ~heldout, "zero_shot"].mean())}
              for row in sorted(table["row"].unique())}
    if heldout.any():  # the main row only: `dvc exp run -S render.sequence_fill=...` compares the fills on them
        report["mapper"]["heldout_zero_shot_top1"] = float(table.loc[(table["row"] == "mapper") & heldout,
                                                                     "zero_shot"].mean())
    report["chance_zero_shot_top1"] = 1 / len(prompts)
    write_json(metrics, report)
    with atomic_path(scores) as tmp:
        table.to_csv(tmp, index=False)
    return report

