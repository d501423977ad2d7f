"""Image-level metrics with a CLIP model: how well a rendered image matches its true prompt.

CLIP score = 100 * max(cos(image, prompt), 0) (Hessel et al., 2021); zero-shot accuracy = the true prompt is
the closest of all class prompts to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from a2i_core.core.errors import A2IError, first_line, quiet_hf_libraries
from a2i_core.core.hub import pretrained_source


class ClipScorer:
    def __init__(self, directory: str | Path, device: torch.device) -> None:
        quiet_hf_libraries()
        from transformers import CLIPModel, CLIPProcessor

        model, revision = pretrained_source(directory, "config.json")
        try:
            self.model = CLIPModel.from_pretrained(model, revision=revision).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(model, revision=revision)
        except OSError as err:
            raise A2IError(f"cannot load CLIP from {model}: {first_line(err)}") from None
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Unit-norm image embeddings (n, d)."""
        parts = []
        for i in range(0, len(images), batch_size):
            inputs = self.processor(images=images[i : i + batch_size], return_tensors="pt").to(self.device)
            parts.append(self.model.get_image_features(**inputs).pooler_output)  # (b, d) projected
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def embed_prompts(self, prompts: list[str]) -> np.ndarray:
        """Unit-norm prompt embeddings (K, d)."""
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        features = self.model.get_text_features(**inputs).pooler_output  # (K, d) projected
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def clip_scores(image_emb: np.ndarray, prompt_emb: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """Per image: 100 * max(cos(image, its true prompt), 0)."""
    cos = np.sum(image_emb * prompt_emb[true_index], axis=-1)
    return 100 * np.maximum(cos, 0)


def zero_shot_correct(image_emb: np.ndarray, prompt_emb: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """Per image: is its true prompt the closest of all prompts?"""
    return np.argmax(image_emb @ prompt_emb.T, axis=1) == true_index
