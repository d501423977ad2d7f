"""A sound drawn as layers: which sounds it holds and where each goes (its answer), each sound's conditioning, and
the one image of them all. What `a2i generate --layers`, the app, the render stage's layered row and the mixtures
stage each call.

The parts (the audio encoder, the mapper and SD3's image side) come as an :class:`Engine`:
`a2i_core.serve.generate.SoundToImage` is one, and nothing here imports it. A sound found to hold one sound only is
drawn exactly as without layers (the same conditioning through the same render call): layering changes nothing for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from a2i_core.core.errors import A2IError
from a2i_core.core.params import LayersParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings, render
from a2i_core.layers.answer import Layer, decompose, pick
from a2i_core.layers.compose import arrange, joint, joint_negative, layer_conditioning, region_masks
from a2i_core.layers.head import LabelHead
from a2i_core.layers.regions import render_regions
from a2i_core.layers.stereo import hear_channels, pans, place
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict_clips

Scorer = Callable[[list[np.ndarray]], np.ndarray]  # clips' (n_i, D) window embeddings -> (c, K) scores


class Engine(Protocol):
    artifact: MapperArtifact
    pipe: Any  # SD3's transformer, VAE and scheduler
    device: torch.device
    dtype: torch.dtype

    def hear(self, path: Path, levels: list[np.ndarray] | None = None, channel: int | None = None) -> Any: ...


@dataclass
class Layered:
    """What one sound is drawn as: its layers (best first, each placed) and each one's conditioning."""

    layers: list[Layer]
    conds: list[tuple[np.ndarray, np.ndarray]]  # each layer's pooled (P,) and sequence (L, D)


def record(layers: list[Layer], cfg: LayersParams) -> dict[str, Any]:
    """What a PNG's text says of how its sound was layered: each layer's label and score, and its region where it
    has one (a joint sequence places nothing)."""
    mode = cfg.mode if len(layers) > 1 else "single"
    if mode == "joint":
        return {"mode": mode, "answer": cfg.answer,
                "layers": [{"label": layer.label, "score": round(layer.score, 4)} for layer in layers]}
    return {"mode": mode, "layout": cfg.layout, "answer": cfg.answer, "layers": [layer.record() for layer in layers]}


def layering_for(section: LayersParams, mode: str, layout: str | None, size: int) -> LayersParams:
    """params' layers section with a request's mode and layout (None: the section's), refused in one line when an
    image of ``size`` pixels has no room for its regions."""
    try:
        layering = dataclasses.replace(section, mode=mode, layout=layout or section.layout)
    except ValueError as err:  # LayersParams' own checks
        raise A2IError(str(err)) from None
    if layering.mode not in ("regions", "joint") or layering.layout not in ("score", "grid", "stereo"):
        raise A2IError(f"layers must be regions or joint, laid out by score, grid or stereo (got {mode!r}, "
                       f"{layout!r})")
    problem = layering.room_problem(size, "an image of")
    if problem is not None:
        raise A2IError(f"{problem}: lower layers.max_layers, or draw a larger image")
    return layering


def layers_from_scores(scores: np.ndarray, prompts: list[str], cfg: LayersParams) -> tuple[list[Layer], list[str]]:
    """A clip's layers from its scores (K,), placed by a layout that needs no channels (a stereo layout, asked of a
    sound with none, puts every layer in the middle)."""
    layers, notes = pick(scores, prompts, cfg.min_score, cfg.max_layers)
    if cfg.layout == "stereo":
        return [dataclasses.replace(layer, x=0.5, y=0.5) for layer in layers], notes
    return arrange(layers, cfg.layout), notes


def bank_fill(artifact: MapperArtifact, fill: SequenceFill) -> Callable[[np.ndarray], np.ndarray]:
    """A prompt's sequence (L, D) made by ``fill`` from its pooled embedding (P,): a layer's sequence when the bank
    stores none."""
    return lambda pooled: fill.rows(pooled[None], artifact.empty_sequence, artifact.prompt_pooled,
                                    artifact.prompt_sequences)(0)


def scorer(artifact: MapperArtifact, answer: str, head: LabelHead | None) -> Scorer:
    """How clips are scored over the prompt bank: the label head's probabilities, or the shares of the mapper's
    prediction decomposed over the bank (nnls)."""
    if answer == "head":
        if head is None:
            raise A2IError("layers.answer is head, but there is no label head (run `dvc repro label_head`, pass "
                           "--label-head DIR, or set layers.answer: nnls)")
        return head.scores
    return lambda clips: decompose(predict_clips(artifact.mapper, clips)[0], artifact.prompt_pooled)


def windows(frames: np.ndarray) -> list[np.ndarray]:
    """Each window of a clip (n, D) as a clip of its own (1, D)."""
    return [frames[t : t + 1] for t in range(len(frames))]


def find_layers(engine: Engine, score: Scorer, path: Path, frames: np.ndarray, cfg: LayersParams
                ) -> tuple[list[Layer], list[str]]:
    """The sounds heard in ``frames`` (the file at ``path``, heard), best first, each placed by ``cfg.layout``,
    with the notes the user should read. A stereo layout hears the file again channel by channel: each channel's
    clearest sound counts as loud as it is there alone, if louder than in the mix (sounds apart in space are heard
    apart, as a listener hears them), and each sound goes where the channels place it."""
    scores = score([frames])[0]  # (K,)
    if cfg.layout != "stereo":
        return layers_from_scores(scores, engine.artifact.prompts, cfg)
    stereo = hear_channels(engine.hear, path)
    for frames, _ in stereo.channels():
        if len(frames):
            side = score([frames])[0]  # (K,): the channel heard as a clip of its own
            best = int(np.argmax(side))  # its one clearest sound: a channel's weaker guesses add false layers
            scores[best] = max(scores[best], side[best])
    layers, notes = pick(scores, engine.artifact.prompts, cfg.min_score, cfg.max_layers)
    directions = pans(stereo, lambda f: score(windows(f)), [layer.index for layer in layers])
    placed, more = place(layers, directions, cfg.centre)
    return placed, notes + stereo.notes + more


def conditioning(artifact: MapperArtifact, layers: list[Layer], pooled: np.ndarray, sequence: np.ndarray,
                 fill: Callable[[np.ndarray], np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each layer's pooled (P,) and sequence (L, D): for one layer, the sound's own (``pooled``, ``sequence``);
    for several, each prompt's own from the bank (``fill`` of its pooled when the bank holds no sequences)."""
    return layer_conditioning(layers, (pooled, sequence), artifact.prompt_pooled, artifact.prompt_sequences, fill)


def draw(engine: Engine, layered: Layered, cfg: LayersParams, settings: RenderSettings, seed: int) -> Image.Image:
    """One image of a layered sound, from noise seed ``seed``: one layer as the single render draws it; several as
    one joint text sequence, or as regions denoised under their own sound and blended every step."""
    artifact, n = engine.artifact, len(layered.layers)
    empty_pooled, empty_sequence = artifact.empty_pooled, artifact.empty_sequence
    if n == 1 or cfg.mode == "joint":
        if n == 1:
            pooled, sequence = layered.conds[0]  # (P,), (L, D)
            negative = empty_sequence
        else:
            pooled, sequence = joint(layered.conds, [layer.score for layer in layered.layers])  # (P,), (n L, D)
            negative = joint_negative(empty_sequence, n)  # (n L, D)
        out = render(engine.pipe, np.asarray(pooled, np.float32)[None], lambda _: sequence[None], empty_pooled,
                     negative, settings, engine.device, engine.dtype, seeds=[seed])
        return out[0][1]
    masks = region_masks(layered.layers, settings.size, settings.size, cfg.feather)  # (n, H, W)
    return render_regions(engine.pipe, layered.conds, masks, empty_pooled, empty_sequence, settings, engine.device,
                          engine.dtype, seed, [(layer.x, layer.y) for layer in layered.layers])
