"""Any sound to an image with a trained mapper: decode -> VGGish -> mapper -> SD3 (transformer + VAE only).

Models are loaded once; many files are embedded in one batch and rendered in batches. The encoders are checked
against the mapper's provenance: other VGGish weights, another postprocess setting or frontend, or another SD3
are refused, since the mapper never saw such features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from a2i_core.artifact import MapperArtifact
from a2i_core.audio import AudioError, decode
from a2i_core.audio_encoder import AudioEncoder, load_audio_encoder
from a2i_core.audio_features import clip_means, embed_waves, place_encoder
from a2i_core.devices import resolve_device, resolve_dtype
from a2i_core.errors import A2IError
from a2i_core.hub import model_identity
from a2i_core.mapper import pad_frames, predict
from a2i_core.render import RenderSettings, fill_sequence, render, sequence_fills
from a2i_core.sd3 import load_sd3

log = logging.getLogger(__name__)
SILENCE_RMS = 1e-4  # -80 dBFS: nothing for VGGish to hear


def pick_device(name: str) -> torch.device:
    """Like params' devices, but a missing GPU falls back to the CPU with a warning instead of stopping."""
    try:
        return resolve_device(name)
    except A2IError:
        log.warning("no %s device is visible: falling back to the CPU (slow for a real SD3)", name)
        return torch.device("cpu")


@dataclass
class Sound:
    path: Path
    pooled: np.ndarray  # (P,)
    tokens: np.ndarray | None  # (N, D)
    nearest: list[tuple[str, float]]
    images: list[Image.Image] = field(default_factory=list)


class SoundToImage:
    """Sound files to images: VGGish, the trained mapper and SD3's image side (no text encoders) on one device."""

    def __init__(self, artifact: MapperArtifact, encoder: AudioEncoder, pipe, device: torch.device,
                 dtype: torch.dtype) -> None:
        transformer, config = pipe.transformer.config, artifact.mapper.config
        width = artifact.empty_sequence.shape[1]
        if transformer.pooled_projection_dim != config.pooled_dim or transformer.joint_attention_dim != width:
            raise A2IError(f"this SD3 takes pooled {transformer.pooled_projection_dim} / text "
                           f"{transformer.joint_attention_dim} wide, the mapper gives {config.pooled_dim} / {width}")
        self.artifact, self.encoder, self.pipe, self.device, self.dtype = artifact, encoder, pipe, device, dtype
        self.frontend = place_encoder(encoder, device)

    @classmethod
    def from_pretrained(cls, mapper_dir: str | Path, vggish_dir: str | Path, sd3_dir: str | Path,
                        device: torch.device, dtype: str = "bfloat16") -> SoundToImage:
        """Load the three parts, checking that VGGish and SD3 are those whose features the mapper learnt from."""
        artifact = MapperArtifact.load(mapper_dir)
        provenance = artifact.mapper.config.provenance
        encoder = load_audio_encoder(vggish_dir, postprocess=provenance.postprocess)
        provenance.check(str(vggish_dir), **encoder.provenance())
        provenance.check(str(sd3_dir), diffusion_model=model_identity(sd3_dir))
        torch_dtype = resolve_dtype(dtype, device)
        pipe = load_sd3(sd3_dir, "image", device, torch_dtype)
        try:
            return cls(artifact, encoder, pipe, device, torch_dtype)
        except A2IError as err:
            raise A2IError(f"{sd3_dir}: {err}") from None

    @staticmethod
    def load_audio(paths: list[Path]) -> list[np.ndarray]:
        """Decode every file first, so a bad one stops the run before any model work, with all problems named."""
        waves, problems = [], []
        for path in paths:
            try:
                wave = decode(path)
            except AudioError as err:
                problems.append(str(err))
                continue
            if np.sqrt(np.mean(wave.astype(np.float64) ** 2)) < SILENCE_RMS:
                problems.append(f"{path}: silent (RMS below -80 dBFS): there is nothing to hear")
            waves.append(wave)
        if problems:
            raise A2IError("; ".join(problems))
        return waves

    @torch.inference_mode()
    def sounds(self, paths: list[Path]) -> list[Sound]:
        """Embed and map every file; the top-3 nearest prompts come with each."""
        waves = self.load_audio(paths)
        frames = embed_waves(self.encoder, self.frontend, waves, batch_size=64, device=self.device)
        mapper = self.artifact.mapper
        frames_input = mapper.config.input == "frames"
        x, mask = pad_frames(frames, mapper.config.max_frames) if frames_input else (clip_means(frames), None)
        pooled, tokens = predict(mapper, x, mask)
        nearest = self.artifact.nearest_prompts(pooled)
        return [Sound(p, pooled[i], None if tokens is None else tokens[i], nearest[i]) for i, p in enumerate(paths)]

    def render(self, sounds: list[Sound], settings: RenderSettings, images_per_sound: int,
               sequence_fill: str = "empty_prompt") -> float:
        """Fill each Sound's images; image k of a sound uses seed ``settings.seed + k``. Returns seconds."""
        fill = sequence_fills(self.artifact.empty_sequence)[sequence_fill]
        plan = [(s, k) for s in sounds for k in range(images_per_sound)]
        pooled = np.stack([s.pooled for s, _ in plan]).astype(np.float32)
        start = time.monotonic()
        images = render(self.pipe, pooled, lambda idx: np.stack([fill_sequence(fill, plan[j][0].tokens) for j in idx]),
                        self.artifact.empty_pooled, self.artifact.empty_sequence, settings, self.device, self.dtype,
                        seeds=[settings.seed + k for _, k in plan])
        for j, image in images:
            plan[j][0].images.append(image)
        return time.monotonic() - start
