"""The offline profile's tiny SD3 and CLIP, fitted to the synthetic classes' prompts, make sound visible.

The demo workspace's fitted models (its encoders stage ran ``fit_tiny_sd3`` and ``fit_tiny_clip``) render, through
the project's own ``render`` at the tests' settings (64 px, 4 steps, guidance 5), from the embeddings its embed_text
stored, and are scored with the project's own CLIP zero-shot code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from a2i_core.data.ingest import prompt_for
from a2i_core.data.sources.pictures import picture, picture_array
from a2i_core.data.sources.synthetic import SOUND_CLASSES
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.image_scores import ClipScorer, zero_shot_correct
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_sequences, load_text_features
from a2i_core.diffusion.render import RenderSettings, render
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.offline import tiny
from a2i_core.offline.fit import fit_tiny_clip, fit_tiny_sd3
from tests.conftest import offline

CPU = torch.device("cpu")
DIFFUSION = offline("diffusion")
DATA = offline("data")
PROMPTS = [prompt_for(DATA.prompt_template, SOUND_CLASSES[c].name) for c in DATA.synthetic.classes]
SIZE, STEPS, GUIDANCE = 64, 4, 5.0
SEEDS = (0, 1000, 2000)


def test_each_prompt_has_its_own_picture_drawn_the_same_every_time():
    pictures = np.stack([picture_array(p, 64) for p in PROMPTS])  # (K, 3, 64, 64)
    assert np.array_equal(pictures, np.stack([picture_array(p, 64) for p in PROMPTS]))
    distance = np.abs(pictures[:, None] - pictures[None]).mean(axis=(2, 3, 4))  # (K, K)
    off_diagonal = distance[~np.eye(len(PROMPTS), dtype=bool)]
    assert off_diagonal.min() > 0.1  # in [-1, 1] units: clearly different pictures, not a shade apart
    assert picture(PROMPTS[0], 128).size == (128, 128)


def test_prompts_are_matched_by_keyword_and_any_other_prompt_is_hashed():
    siren = picture_array("an image of a police car siren", 64)
    engine = picture_array("an image of a idling car engine", 64)
    assert not np.array_equal(siren, engine)  # "car" in both: the siren's own word wins
    assert np.array_equal(picture_array("a siren at night", 64), siren)
    cat, mat = picture_array("a cat on a mat", 64), picture_array("a mat", 64)
    assert np.array_equal(cat, picture_array("a cat on a mat", 64))
    assert np.abs(cat - mat).mean() > 0.05


def _embed(text: Path) -> dict:
    """The class prompts' embeddings as embed_text stored them (float16 sequences), read back through its readers."""
    prompts, pooled = load_text_features(text)
    empty_pooled, empty_sequence = load_guidance(text)
    return {"prompts": prompts, "pooled": pooled, "sequences": load_sequences(text, prompts).astype(np.float32),
            "empty_pooled": empty_pooled, "empty_sequence": np.asarray(empty_sequence, np.float32)}


def _near(pooled: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Each row (n, P) moved orthogonally to cosine ``cosine`` with itself: what a good mapper predicts."""
    noise = rng.standard_normal(pooled.shape).astype(np.float32)
    noise -= np.sum(noise * pooled, -1, keepdims=True) / np.sum(pooled * pooled, -1, keepdims=True) * pooled
    scale = np.linalg.norm(pooled, axis=-1, keepdims=True) * np.tan(np.arccos(cosine))
    return pooled + noise / np.linalg.norm(noise, axis=-1, keepdims=True) * scale


@pytest.fixture(scope="module")
def zero_shot(demo_workspace) -> dict[str, float]:
    """Zero-shot top-1 of each kind of conditioning, over a few seeds, with the SD3 and CLIP the demo's encoders
    stage fitted (for 64 and 128 px, 4 and 8 steps, guidance 5) and the prompt embeddings its embed_text stored."""
    models = demo_workspace[0] / "models"
    emb = _embed(demo_workspace[0] / "data/features/text")
    assert sorted(emb["prompts"]) == sorted(PROMPTS)
    n = len(emb["prompts"])
    empty = np.repeat(emb["empty_sequence"][None], n, axis=0)  # (n, L, D)
    predicted = _near(emb["pooled"], 0.99, np.random.default_rng(0))
    nearest = SequenceFill.from_params(offline("render"), "nearest_prompts").rows(predicted, empty[0], emb["pooled"],
                                                                                  emb["sequences"])
    rows = {  # name: (pooled (n, P), sequences (n, L, D))
        "true_prompt": (emb["pooled"], emb["sequences"]),
        "pooled_empty_sequence": (emb["pooled"], empty),
        "predicted_like": (predicted, empty),
        "predicted_like_nearest_prompts": (predicted, np.stack([nearest(i) for i in range(n)])),
        "baseline_mean": (np.repeat(emb["pooled"].mean(0, keepdims=True), n, axis=0), empty),
    }
    pipe = load_sd3(models / "sd3", "image", CPU)
    scorer = ClipScorer(models / "clip", CPU)
    prompt_emb = scorer.embed_prompts(emb["prompts"])  # (K, d)
    accuracy = {}
    for name, (pooled, sequences) in rows.items():
        correct = []
        for seed in SEEDS:
            settings = RenderSettings(steps=STEPS, guidance=GUIDANCE, size=SIZE, seed=seed, batch_size=n)
            images = [image for _, image in render(pipe, pooled.astype(np.float32), lambda idx, s=sequences: s[idx],
                                                   emb["empty_pooled"], emb["empty_sequence"], settings, CPU,
                                                   torch.float32)]
            correct.extend(zero_shot_correct(scorer.embed_images(images), prompt_emb, np.arange(n)))
        accuracy[name] = float(np.mean(correct))
    return accuracy


def test_images_of_the_true_prompts_are_recognised(zero_shot):
    assert zero_shot["true_prompt"] >= 0.9, zero_shot


def test_images_of_predicted_like_pooled_embeddings_are_recognised(zero_shot):
    # How the mapper's predictions are drawn: a pooled embedding only near the truth, the empty prompt's sequence.
    assert zero_shot["pooled_empty_sequence"] >= 0.9, zero_shot
    assert zero_shot["predicted_like"] >= 0.8, zero_shot
    # render.sequence_fill nearest_prompts: the same pooled embeddings over a mix of the closest prompts' sequences.
    assert zero_shot["predicted_like_nearest_prompts"] >= 0.8, zero_shot


def test_the_mean_embedding_draws_no_particular_sound(zero_shot):
    assert zero_shot["baseline_mean"] <= 0.3, zero_shot


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part in ("vae", "transformer")
            for k, v in load_file(directory / part / "diffusion_pytorch_model.safetensors").items()}


def test_fitting_is_deterministic_and_leaves_the_thread_count_alone(tmp_path):
    threads = torch.get_num_threads()
    fitted = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        tiny.save_tiny_sd3(tmp_path / name / "sd3")
        tiny.save_tiny_clip(tmp_path / name / "clip")
        fit_tiny_sd3(tmp_path / name / "sd3", PROMPTS[:3], max_sequence_length=DIFFUSION.max_sequence_length,
                     sizes=(32,), render_steps=(2,), vae_steps=3, steps=3, seed=seed)
        fit_tiny_clip(tmp_path / name / "clip", PROMPTS[:3], steps=3, seed=seed)
        fitted.append((_weights(tmp_path / name / "sd3"), load_file(tmp_path / name / "clip" / "model.safetensors")))
    assert torch.get_num_threads() == threads
    (sd3_a, clip_a), (sd3_b, clip_b), (sd3_c, clip_c) = fitted
    assert sd3_a.keys() == sd3_b.keys() and all(torch.equal(sd3_a[k], sd3_b[k]) for k in sd3_a)
    assert all(torch.equal(clip_a[k], clip_b[k]) for k in clip_a)
    assert any(not torch.equal(sd3_a[k], sd3_c[k]) for k in sd3_a)  # the seed matters
    assert any(not torch.equal(clip_a[k], clip_c[k]) for k in clip_a)
