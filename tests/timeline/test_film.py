"""A film interrupted (a full disk) keeps its frames, and the rerun draws only the missing ones and gives the film an
uninterrupted run gives: full frames and warm-started ones alike."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from a2i_core.core.audio_io import SAMPLE_RATE, decode, write_wav
from a2i_core.core.errors import A2IError
from a2i_core.core.params import load_params
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.generate import SoundToImage
from a2i_core.timeline import film as film_module
from a2i_core.timeline import video
from a2i_core.timeline.make import make_timeline
from a2i_core.timeline.video import film_frames, film_info

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def setup(demo_workspace, tmp_path_factory):
    ws = demo_workspace[0]
    params = load_params(ws / "params.yaml")
    engine = SoundToImage.from_pretrained(ws / "models" / "mapper", ws / "models" / "audio_encoder",
                                          ws / "models" / "sd3", torch.device("cpu"), "float32")
    # The first 6 s of an evaluation recording (a sound, then silence): 6 frames at 1 frame/s.
    recording = tmp_path_factory.mktemp("film") / "six_seconds.wav"
    write_wav(recording, decode(sorted((ws / "data" / "timelines").iterdir())[0] / "audio.wav")[: 6 * SAMPLE_RATE])
    return engine, params, recording


def _film(setup, out: Path, **timeline) -> Path:
    engine, params, recording = setup
    cfg = dataclasses.replace(params.timeline, fps=1.0, **timeline)
    settings = RenderSettings.from_params(params.render)
    return make_timeline(engine, recording, out, cfg, settings, SequenceFill.from_params(params.render)).film


@pytest.mark.parametrize("warm", [0.0, 0.5], ids=["full frames", "warm start"])
def test_a_full_disk_keeps_the_frames_and_the_rerun_draws_only_the_rest(setup, tmp_path, monkeypatch, warm):
    whole = _film(setup, tmp_path / "whole", warm_strength=warm)
    real_save, saved = video.save_png, []

    def fills_up(image, path, text=None):
        if len(saved) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        real_save(image, path, text)

    monkeypatch.setattr(video, "save_png", fills_up)
    with pytest.raises(A2IError, match=r"no space left on the disk\); the frames made so far are kept in .* a rerun "
                                       r"resumes from them$"):
        _film(setup, tmp_path / "cut", warm_strength=warm)
    assert not (tmp_path / "cut" / "film.mp4").exists()
    monkeypatch.setattr(video, "save_png", real_save)
    drawn = []
    real_warm, real_iter = film_module.render_film_frames, film_module.render_iter

    def counted(real):
        return lambda *a, **k: (drawn.append(made[0]) or made for made in real(*a, **k))

    monkeypatch.setattr(film_module, "render_film_frames", counted(real_warm))
    monkeypatch.setattr(film_module, "render_iter", counted(real_iter))
    resumed = _film(setup, tmp_path / "cut", warm_strength=warm)
    n = film_info(whole)["frames"]
    assert film_info(resumed)["frames"] == n
    assert drawn == list(range(3, n))  # warm frames in order, from the last kept frame's latent
    assert np.abs(_all_frames(resumed).astype(int) - _all_frames(whole)).max() <= 2  # what an uninterrupted run makes


def _all_frames(path: Path) -> np.ndarray:
    return np.stack(list(film_frames(path)))
