"""FID and KID's feature extractor when papers' numbers are the comparison: the FID Inception, TensorFlow's
2015-12-05 graph as TorchScript (the file StyleGAN's and clean-fid's metrics load), called as
``net(images, return_features=True)`` on uint8 images (N, 3, H, W) -> (N, 2048) pool features.

The file comes from a local path or from a URL with its sha256 (a TorchScript file is a program: a URL's bytes are
run only when they are the ones named). Tests build a small network of the same interface, save it as TorchScript
and load it back through this very path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.fetch_file import cache_name, fetch_file, sha256_file
from a2i_core.core.files import cache_root
from a2i_core.core.urls import redact

INCEPTION_SIZE = 299  # the graph's input; the TorchScript resizes others itself, but squares of this size batch


def square_uint8(images: list[Image.Image], size: int = INCEPTION_SIZE) -> torch.Tensor:
    """(N, 3, size, size) uint8: each image's centred square, resized (a video frame is wider than it is tall; the
    generated images are square)."""
    out = []
    for image in images:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        crop = image.convert("RGB").crop((left, top, left + side, top + side))
        out.append(np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1))  # (3, s, s)
    return torch.from_numpy(np.stack(out))


class InceptionFeatures:
    """The FID Inception's 2048-D pool features of images."""

    name = "FID Inception v3 (TensorFlow 2015-12-05, pool 2048-D)"

    def __init__(self, net: torch.jit.ScriptModule, device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @classmethod
    def from_file(cls, location: str, sha256: str | None, device: torch.device) -> InceptionFeatures:
        path = Path(location)
        if "://" in location:
            # Checked on every load, not only when fetched: the cached copy must still be the file named.
            path = cache_root() / "models" / cache_name(location)
            if not (path.is_file() and sha256 is not None and sha256_file(path) == sha256):
                fetch_file(location, path, sha256, key="evaluate.inception_sha256")
        elif not path.is_file():
            raise A2IError(f"evaluate.inception: {location}: no such file (the FID Inception as TorchScript)")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format this file ships in
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as err:
            raise A2IError(f"evaluate.inception: {redact(location)}: not a TorchScript file ({first_line(err)})"
                           ) from None
        return cls(net, device)

    @torch.inference_mode()
    def embed(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n, d) float64 features, n = len(images)."""
        parts = []
        for i in range(0, len(images), batch_size):
            batch = square_uint8(images[i : i + batch_size]).to(self.device)
            try:
                features = self.net(batch, return_features=True)
            except RuntimeError as err:  # a TorchScript of another interface
                raise A2IError(f"evaluate.inception: the network does not take uint8 images and return_features: "
                               f"{first_line(err)}") from None
            if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] != len(batch):
                raise A2IError("evaluate.inception: the network's features are not one vector per image")
            parts.append(features.double().cpu())
        found = torch.cat(parts).numpy()
        if not np.isfinite(found).all():
            raise A2IError("evaluate.inception: the network's features are not finite")
        return found
