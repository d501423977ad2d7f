"""VGGish: the torchvggish architecture, its log-mel frontend in torch, and its PCA postprocess.

Weights are torchvggish's release files (a state dict with ``features.*`` and ``embeddings.*`` keys,
and a PCA dict with ``pca_eigen_vectors`` / ``pca_means``), or any file with the same keys. The
frontend reproduces ``vggish_input.waveform_to_examples`` on 16 kHz audio, batched.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from a2i_core.core.errors import A2IError, first_line

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # next power of two above the window
MEL_BANDS = 64
MEL_LOW_HZ, MEL_HIGH_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames
EMBEDDING_DIM = 128
MIN_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # shortest waveform that yields one example
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
# Recorded in a mapper's provenance: features from another frontend are not the same features.
FRONTEND = "vggish-logmel-v1: 16 kHz, 25 ms Hann / 10 ms hop, 512 FFT, 64 mel 125-7500 Hz, log(+0.01), 96 frames"


class VGGish(nn.Module):
    """torchvggish's VGG: four conv blocks, then 12288 -> 4096 -> 4096 -> 128 with ReLUs (72 M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
            nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, EMBEDDING_DIM), nn.ReLU(True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        # examples: (B, 1, 96, 64) log-mel patches
        x = self.features(examples)  # (B, 512, 6, 4)
        # The released weights flatten in TensorFlow's (H, W, C) order.
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (B, 12288)
        return self.embeddings(x)  # (B, 128)


class Postprocessor(nn.Module):
    """PCA whitening and 8-bit quantisation, as in the released AudioSet embeddings (values 0..255)."""

    def __init__(self, eigen_vectors: torch.Tensor, means: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("eigen_vectors", eigen_vectors.float())  # (128, 128)
        self.register_buffer("means", means.float().reshape(1, -1))  # (1, 128)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        pca = (embeddings - self.means) @ self.eigen_vectors.T  # (B, 128)
        clipped = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def mel_matrix() -> np.ndarray:
    """VGGish's (257, 64) triangular mel weights on the HTK scale, DC bin zeroed."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(np.array(MEL_LOW_HZ)), _hz_to_mel(np.array(MEL_HIGH_HZ)), MEL_BANDS + 2)
    weights = np.empty((FFT // 2 + 1, MEL_BANDS))
    for i in range(MEL_BANDS):
        lower, center, upper = edges[i : i + 3]
        rising = (bins_mel - lower) / (center - lower)
        falling = (upper - bins_mel) / (upper - center)
        weights[:, i] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


class LogMelFrontend(nn.Module):
    """16 kHz waveforms -> VGGish log-mel examples (n, 1, 96, 64), with no padding between examples.

    The spectrogram is computed in float64: VGGish's log(mel + 0.01) amplifies float32 FFT rounding in quiet
    bands next to loud ones by up to 3e-4, and float64 keeps us within 1e-5 of the numpy reference.
    """

    def __init__(self) -> None:
        super().__init__()
        n = torch.arange(WINDOW, dtype=torch.float64)
        self.register_buffer("window", 0.5 - 0.5 * torch.cos(2 * math.pi * n / WINDOW))  # periodic Hann
        self.register_buffer("mel", torch.from_numpy(mel_matrix()))  # (257, 64) float64

    @staticmethod
    def num_examples(num_samples: int) -> int:
        frames = 1 + (max(num_samples, MIN_SAMPLES) - WINDOW) // HOP
        return 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (samples,) float in [-1, 1]
        return self.batch([wave])[0]

    def batch(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Examples of several clips in one FFT: ((sum n_i, 1, 96, 64) float32, [n_i])."""
        frames, counts = [], []
        for wave in waves:
            # A clip shorter than one example is padded to one by repeating it: zero padding would make a
            # 0.5 s clip's embedding mostly describe silence.
            if wave.shape[0] < MIN_SAMPLES:
                wave = wave.repeat(-(-MIN_SAMPLES // wave.shape[0]))[:MIN_SAMPLES]
            n = self.num_examples(wave.shape[0])
            # Only the frames that fall into whole examples: (96 n, 400)
            frames.append(wave.to(self.window.dtype).unfold(0, WINDOW, HOP)[: n * EXAMPLE_FRAMES])
            counts.append(n)
        spectrum = torch.fft.rfft(torch.cat(frames) * self.window, n=FFT).abs()  # (F, 257)
        log_mel = torch.log(spectrum @ self.mel + LOG_OFFSET)  # (F, 64)
        examples = log_mel.reshape(-1, 1, EXAMPLE_FRAMES, MEL_BANDS)  # (sum n_i, 1, 96, 64)
        return examples.float(), counts


def load_vggish(weights: dict[str, torch.Tensor]) -> VGGish:
    """A VGGish in eval mode with ``weights`` (torchvggish's state dict); strict about keys and shapes."""
    model = VGGish()
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        reason = first_line(err)
        raise A2IError(f"VGGish weights do not match the torchvggish architecture: {reason}") from None
    return model.eval()


def load_postprocessor(pca: dict[str, torch.Tensor]) -> Postprocessor:
    if set(pca) != {"pca_eigen_vectors", "pca_means"}:
        raise A2IError(f"VGGish PCA file must hold pca_eigen_vectors and pca_means, found {sorted(pca)[:10]}")
    vectors, means = torch.as_tensor(pca["pca_eigen_vectors"]), torch.as_tensor(pca["pca_means"])
    if tuple(vectors.shape) != (EMBEDDING_DIM, EMBEDDING_DIM) or means.numel() != EMBEDDING_DIM:
        raise A2IError(f"VGGish PCA does not match the embedding: pca_eigen_vectors {tuple(vectors.shape)} and "
                       f"pca_means {tuple(means.shape)}, expected ({EMBEDDING_DIM}, {EMBEDDING_DIM}) and "
                       f"{EMBEDDING_DIM} values")
    return Postprocessor(vectors, means).eval()
