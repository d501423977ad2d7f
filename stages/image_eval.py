"""image_eval: CLIP score and zero-shot class accuracy of every rendered row -> metrics/image_eval.json.

Rows: the mapper's images (both sequence fills), the true prompt's (upper bound), the mean embedding's
(lower bound). Zero-shot: is the image closest, under CLIP, to its own class prompt among all class prompts?
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.clip_score import ClipScorer, clip_scores, zero_shot_correct
from a2i_core.devices import resolve_device
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import write_json
from a2i_core.params import load_params
from a2i_core.text import load_text_features


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().evaluate
    index = pd.read_csv("metrics/render_index.csv")
    prompts, _ = load_text_features("data/features/text")
    scorer = ClipScorer("models/clip", resolve_device(cfg.device))
    prompt_emb = scorer.embed_prompts(prompts)  # (K, d)
    images = [Image.open(Path("metrics/images") / f).convert("RGB") for f in index["file"]]
    image_emb = scorer.embed_images(images)  # (n, d)
    true = np.array([prompts.index(p) for p in index["prompt"]])
    index["clip_score"] = clip_scores(image_emb, prompt_emb, true)
    index["zero_shot"] = zero_shot_correct(image_emb, prompt_emb, true)
    index["cosine"] = np.sum(image_emb * prompt_emb[true], axis=-1)
    report = {row: {"images": int(len(g)), "clip_score": float(g["clip_score"].mean()),
                    "clip_cosine": float(g["cosine"].mean()),
                    "zero_shot_top1": float(g["zero_shot"].mean())}
              for row, g in index.groupby("row", sort=True)}
    write_json("metrics/image_eval.json", {**report, "chance_zero_shot_top1": 1 / len(prompts)})


if __name__ == "__main__":
    main()
