"""The field's image measures against their definitions: FID against the Frechet distance of Heusel et al. computed
with scipy, KID against the unbiased polynomial-kernel MMD written out, IIS rank and R@k on constructed cases; the
FID Inception loaded from a TorchScript file of its interface (a small network saved here), from a path and a URL."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.fid_features import InceptionFeatures, square_uint8
from a2i_core.diffusion.field_measures import fid_kid, iis, iis_rank, recall_at_k
from tests.media_server import MediaServer


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def _mmd_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]

    def kernel(x, y):
        return (x @ y.T / d + 1) ** 3

    n = len(a)
    kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def test_fid_and_kid_are_the_definitions():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.5, 1.3, size=(40, 6))
    found = fid_kid(fake, real, min_images=2)
    assert found.fid == pytest.approx(_frechet(real, fake), rel=1e-4)
    # one subset as large as the sets is the sets themselves: KID is then the unbiased MMD exactly
    assert found.kid == pytest.approx(_mmd_unbiased(real, fake), rel=1e-6, abs=1e-9)
    assert found.kid_std is None  # every subset is the whole set: no spread to give
    same = fid_kid(real, real, min_images=2)
    assert same.fid == pytest.approx(0, abs=1e-6) and found.fid > 1
    assert fid_kid(fake, real, 2, seed=3) == fid_kid(fake, real, 2, seed=3)  # KID's subsets drawn the same each run


def test_too_few_images_give_kid_only_and_say_why():
    rng = np.random.default_rng(1)
    found = fid_kid(rng.normal(size=(5, 4)), rng.normal(size=(30, 4)), min_images=8)
    assert found.fid is None and np.isfinite(found.kid)
    assert "no FID: 5 images and 30 frames" in found.note and "fid_min_images" in found.note
    one = fid_kid(rng.normal(size=(1, 4)), rng.normal(size=(30, 4)), min_images=8)
    assert one.fid is None and one.kid is None and "no KID" in one.note


def test_iis_rank_and_recall_on_constructed_cases():
    frames = np.eye(4)  # four orthogonal frames
    images = np.eye(4)  # each image its own frame exactly
    own = np.arange(4)
    assert np.allclose(iis(images, frames[own]), 1)
    assert np.allclose(iis_rank(images, frames, own), 1)
    assert recall_at_k(images, frames, own, (1, 2)) == {1: 1.0, 2: 1.0}
    flat = np.full((4, 4), 0.5)  # an image equally like every frame: chance, and no lucky retrieval
    assert np.allclose(iis_rank(flat, frames, own), 0.5)
    assert recall_at_k(flat, frames, own, (1, 3, 4)) == {1: 0.0, 3: 0.0, 4: 1.0}
    wrong = np.roll(np.eye(4), 1, axis=0)  # each image is another clip's frame
    assert np.allclose(iis_rank(wrong, frames, own), 1 / 3)  # above none, below one, level with two
    assert recall_at_k(wrong, frames, own, (1,)) == {1: 0.0}


def test_ranks_in_blocks_are_the_ranks_at_once(monkeypatch):
    from a2i_core.diffusion import field_measures

    rng = np.random.default_rng(2)
    images, frames, own = rng.normal(size=(9, 5)), rng.normal(size=(7, 5)), rng.integers(0, 7, 9)
    whole = iis_rank(images, frames, own), recall_at_k(images, frames, own, (1, 3))
    monkeypatch.setattr(field_measures, "BLOCK", 2)
    assert np.array_equal(iis_rank(images, frames, own), whole[0])
    assert recall_at_k(images, frames, own, (1, 3)) == whole[1]


def _tiny_inception(path, features: int = 7):
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, features, 5, stride=4)

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            pooled = self.conv(x.float() / 255).mean(dim=(2, 3))  # (N, features)
            return pooled if return_features else pooled.softmax(-1)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    return path


def _pictures(n: int, size=(80, 60)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_the_inception_file_loads_from_a_path_and_embeds_any_size(tmp_path):
    net = InceptionFeatures.from_file(str(_tiny_inception(tmp_path / "inception.pt")), None, torch.device("cpu"))
    found = net.embed(_pictures(3) + _pictures(2, size=(3840, 2160)), batch_size=2)
    assert found.shape == (5, 7) and np.isfinite(found).all()
    assert square_uint8(_pictures(1, size=(90, 30))).shape == (1, 3, 299, 299)


def test_the_inception_file_from_a_url_is_run_only_with_its_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    served = tmp_path / "served"
    served.mkdir()
    file = _tiny_inception(served / "inception.pt")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    with MediaServer(served) as server:
        with pytest.raises(A2IError, match="does not match"):
            InceptionFeatures.from_file(server.url + "inception.pt", "0" * 64, torch.device("cpu"))
        net = InceptionFeatures.from_file(server.url + "inception.pt", digest, torch.device("cpu"))
        assert net.embed(_pictures(2)).shape == (2, 7)
        cached = next((tmp_path / "cache").rglob("*inception.pt"))
        cached.write_bytes(b"changed in the cache")  # the cached copy is checked again, and fetched anew
        served = len(server.requests)
        InceptionFeatures.from_file(server.url + "inception.pt", digest, torch.device("cpu"))
        assert len(server.requests) > served and hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_a_file_that_is_not_the_inception_is_one_line(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript at all")
    with pytest.raises(A2IError, match="not a TorchScript file"):
        InceptionFeatures.from_file(str(junk), None, torch.device("cpu"))
    with pytest.raises(A2IError, match="no such file"):
        InceptionFeatures.from_file(str(tmp_path / "missing.pt"), None, torch.device("cpu"))

    class Other(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(2, 3))

    torch.jit.save(torch.jit.script(Other()), str(tmp_path / "other.pt"))
    net = InceptionFeatures.from_file(str(tmp_path / "other.pt"), None, torch.device("cpu"))
    with pytest.raises(A2IError, match="return_features"):
        net.embed(_pictures(1))
