"""Stereo placement (a2i_core.layers.stereo): each channel heard through real ffmpeg and a tiny VGGish, pans from
window scores, layers placed from pans."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import embed_path
from a2i_core.core.audio_io import SAMPLE_RATE, ffmpeg_binary
from a2i_core.core.errors import A2IError
from a2i_core.layers.answer import Layer
from a2i_core.layers.stereo import Stereo, hear_channels, pans, place

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hear(tiny_vggish_dir):
    """SoundToImage.hear's contract, small: the file (or one channel of it) embedded, with its windows' levels;
    A2IError "silent" below -80 dBFS, as generate says it."""
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    frontend = encoder.place(CPU)

    class Heard:
        def __init__(self, frames: np.ndarray, seconds: float) -> None:
            self.frames, self.seconds, self.notes = frames, seconds, ["a note hear makes for every channel"]

    def hear(path: Path, levels: list[np.ndarray] | None = None, channel: int | None = None) -> Heard:
        frames, samples, rms = embed_path(encoder, frontend, path, batch_size=8, device=CPU, levels=levels,
                                          channel=channel)
        if rms < 1e-4:
            raise A2IError(f"{path}: silent (RMS below -80 dBFS): there is nothing to hear")
        return Heard(frames, samples / encoder.sample_rate)

    return hear


def sine(hz: float, seconds: float = 3.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE)


def noise(seconds: float = 3.0) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, round(seconds * SAMPLE_RATE))


def write(path: Path, *channels: np.ndarray) -> Path:
    sf.write(path, np.stack(channels, axis=1), SAMPLE_RATE, subtype="FLOAT")
    return path


def ones(frames: np.ndarray) -> np.ndarray:
    """Every window scores 1 for each of 3 sounds: placement by level alone."""
    return np.ones((len(frames), 3))


# --- Hearing the channels ---------------------------------------------------------------------------------------

def test_a_tone_in_the_left_channel_only_pans_hard_left(tmp_path, hear):
    path = write(tmp_path / "left.wav", sine(440), np.zeros(3 * SAMPLE_RATE))
    stereo = hear_channels(hear, path)
    assert stereo.layout == "stereo" and not stereo.opposite_phase
    assert stereo.notes == ["its right channel is silent"]
    assert stereo.heard_notes == ["a note hear makes for every channel"]  # once, not once a channel
    assert len(stereo.left) == len(stereo.left_db) == 3 and stereo.right.shape == (0, stereo.left.shape[1])
    assert stereo.left_db == pytest.approx(np.full(3, -9.03), abs=0.05)  # a 0.5 sine: 20 log10(0.5 / sqrt 2)
    assert stereo.seconds == pytest.approx(3.0)
    assert pans(stereo, ones, [0, 2]) == [-1.0, -1.0]
    placed, notes = place([Layer("tone", 0, 0.9)], pans(stereo, ones, [0]), centre=0.2)
    assert placed[0].pan == -1.0 and placed[0].x == 0.5 and notes == []  # one layer fills the image: the middle


def test_two_hard_panned_sounds_go_to_their_sides(tmp_path, hear):
    # A tone left, noise right; each window scores 1 for the sound whose own recording it is nearest (the tiny
    # VGGish is untrained, but tells a tone from noise).
    refs = {name: hear(write(tmp_path / f"{name}.wav", wave, wave)).frames.mean(axis=0)
            for name, wave in (("tone", sine(440)), ("noise", noise()))}
    bank = np.stack(list(refs.values()))  # (2, D): row 0 the tone, row 1 the noise

    def nearest(frames: np.ndarray) -> np.ndarray:
        distance = np.linalg.norm(frames[:, None] - bank[None], axis=2)  # (n, 2)
        return np.eye(2)[distance.argmin(axis=1)]

    stereo = hear_channels(hear, write(tmp_path / "both.wav", sine(440), noise()))
    assert stereo.notes == []
    directions = pans(stereo, nearest, [1, 0])
    assert directions == [1.0, -1.0]
    layers = [Layer("noise", 1, 0.8), Layer("tone", 0, 0.6)]
    placed, _ = place(layers, directions, centre=0.2)
    assert [(layer.label, layer.x, layer.pan) for layer in placed] == [("noise", 0.75, 1.0), ("tone", 0.25, -1.0)]


def test_a_mono_file_puts_every_sound_in_the_middle(tmp_path, hear):
    sf.write(tmp_path / "mono.wav", sine(440), SAMPLE_RATE)
    stereo = hear_channels(hear, tmp_path / "mono.wav")
    assert stereo.notes == ["mono: every sound goes to the middle"] and stereo.layout == "mono"
    assert np.array_equal(stereo.left, stereo.right)
    assert pans(stereo, lambda f: np.random.default_rng(1).uniform(size=(len(f), 4)), [3, 1]) == [0.0, 0.0]


def test_a_centred_sound_in_a_stereo_file_pans_to_the_middle(tmp_path, hear):
    stereo = hear_channels(hear, write(tmp_path / "centre.wav", sine(440), sine(440)))
    assert stereo.notes == [] and pans(stereo, ones, [0]) == [0.0]


def test_a_51_file_is_placed_from_its_stereo_downmix(tmp_path, hear):
    silent = np.zeros(3 * SAMPLE_RATE)
    # Front left and side left only: both land in the left channel of the standard downmix.
    sf.write(tmp_path / "six.flac", np.stack([sine(440), silent, silent, silent, noise(), silent], axis=1),
             SAMPLE_RATE, subtype="PCM_24")
    stereo = hear_channels(hear, tmp_path / "six.flac")
    assert stereo.layout == "5.1(side)"
    assert stereo.notes == ["5.1(side): 6 channels downmixed to stereo (ffmpeg's standard matrix) for placement",
                            "its right channel is silent"]
    assert pans(stereo, ones, [0]) == [-1.0]


def test_channels_in_opposite_phase_are_heard_from_each_channel(tmp_path, hear):
    path = write(tmp_path / "phase.wav", sine(440), -sine(440))
    with pytest.raises(A2IError, match="silent"):
        hear(path)  # the mono mix: nothing
    stereo = hear_channels(hear, path)
    assert stereo.opposite_phase
    assert stereo.notes == ["its channels are in opposite phase: they cancel in a mono mix, so the sounds are heard "
                            "from each channel"]
    assert pans(stereo, ones, [0]) == [pytest.approx(0.0, abs=1e-6)]


def test_a_wide_stereo_file_is_not_taken_for_opposite_phase(tmp_path, hear):
    # Unrelated sounds on each side leave the mono mix 3 dB down, one side only 6 dB: far from cancelling.
    assert not hear_channels(hear, write(tmp_path / "wide.wav", sine(440), noise())).opposite_phase


def test_a_silent_file_and_other_failures_are_raised(tmp_path, hear):
    silent = np.zeros(3 * SAMPLE_RATE)
    with pytest.raises(A2IError, match="both channels are silent"):
        hear_channels(hear, write(tmp_path / "quiet.wav", silent, silent))
    sf.write(tmp_path / "quiet-mono.wav", silent, SAMPLE_RATE)
    with pytest.raises(A2IError, match="quiet-mono.wav: silent"):
        hear_channels(hear, tmp_path / "quiet-mono.wav")

    def refuses(path, levels=None, channel=None):
        raise A2IError(f"{path}: 0.0100 s is too short to hear")

    # Not silence: a file named "silent" that cannot be heard is not a silent channel.
    with pytest.raises(A2IError, match="too short"):
        hear_channels(refuses, write(tmp_path / "silent.wav", sine(440), sine(440)))


def test_a_video_without_sound_is_named_so(tmp_path, hear):
    quiet = tmp_path / "quiet.mp4"
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5",
                    "-t", "1", "-pix_fmt", "yuv420p", str(quiet)], check=True)
    with pytest.raises(A2IError, match=r"quiet\.mp4: has no audio stream"):
        hear_channels(hear, quiet)


# --- Pans from window scores (synthetic: the formula itself) -----------------------------------------------------

def toy(left_scores: np.ndarray, right_scores: np.ndarray, left_db: list[float], right_db: list[float]) -> Stereo:
    """A Stereo whose window 'embeddings' are their scores: window_scores is then the identity."""
    return Stereo(np.asarray(left_scores, float), np.asarray(right_scores, float), np.asarray(left_db),
                  np.asarray(right_db), seconds=2.0)


def identity(frames: np.ndarray) -> np.ndarray:
    return frames


def test_pans_weigh_each_window_by_how_present_the_sound_is_and_how_loud():
    # Sound 0 only left, sound 1 only right, sound 2 in both (right 6 dB louder), sound 3 nowhere.
    stereo = toy([[1, 0, 1, 0], [0.5, 0, 1, 0]], [[0, 1, 1, 0], [0, 1, 1, 0]], [0, 0], [6, 6])
    directions = pans(stereo, identity, [0, 1, 2, 3])
    gain = 10 ** (6 / 20)
    assert directions[:2] == [-1.0, 1.0] and directions[3] is None
    assert directions[2] == pytest.approx((2 * gain - 2) / (2 * gain + 2))  # 0.33: the level difference
    # A window where the sound is absent says nothing of where it is, however loud (negative scores: absent).
    loud_elsewhere = toy([[1, 0], [0, 1]], [[1, -3], [0, 1]], [0, 40], [0, 0])
    assert pans(loud_elsewhere, identity, [0]) == [0.0]
    assert pans(loud_elsewhere, identity, [1])[0] == pytest.approx((1 - 100) / (1 + 100))


def test_a_silent_channel_is_never_scored():
    stereo = Stereo(np.zeros((0, 2)), np.ones((2, 2)), np.zeros(0), np.zeros(2), seconds=2.0)
    seen = []
    assert pans(stereo, lambda f: seen.append(len(f)) or f, [0, 1]) == [1.0, 1.0]
    assert seen == [2]


def test_window_scores_of_the_wrong_shape_are_refused():
    stereo = toy([[1.0, 0.0]], [[0.0, 1.0]], [0.0], [0.0])
    with pytest.raises(ValueError, match="window_scores gave"):
        pans(stereo, lambda f: f[0], [0])


# --- Placing layers ------------------------------------------------------------------------------------------------

def layers(n: int) -> list[Layer]:
    return [Layer(f"sound {k}", k, 1 - k / 10, y=0.3) for k in range(n)]


def test_a_sound_panned_less_than_centre_goes_to_the_middle():
    placed, notes = place(layers(4), [0.19, -0.2, 0.5, -0.21], centre=0.2)
    assert [layer.x for layer in placed] == [0.5, 0.4, 0.75, 0.395]
    assert [layer.pan for layer in placed] == [0.19, -0.2, 0.5, -0.21]  # what was heard, recorded
    assert [layer.label for layer in placed] == [f"sound {k}" for k in range(4)] and notes == []
    assert {layer.y for layer in placed} == {0.3}
    assert [layer.x for layer in place(layers(2), [0.5, -0.5], centre=0)[0]] == [0.75, 0.25]


def test_a_hard_panned_region_stays_on_the_image():
    # n regions are 1/n of the width: centred at x they reach x +- 1/(2n), so x stays within [1/(2n), 1 - 1/(2n)].
    assert [layer.x for layer in place(layers(2), [-1.0, 1.0], centre=0.2)[0]] == [0.25, 0.75]
    four = place(layers(4), [-1.0, 0.9, 1.0, 0.0], centre=0.2)[0]
    assert [layer.x for layer in four] == [0.125, 0.875, 0.875, 0.5]
    assert place(layers(1), [1.0], centre=0.2)[0][0].x == 0.5


def test_a_sound_heard_in_neither_channel_goes_to_the_middle_with_a_note():
    placed, notes = place(layers(2), [None, -1.0], centre=0.2)
    assert (placed[0].x, placed[0].pan) == (0.5, None) and placed[1].x == 0.25
    assert notes == ["sound 0: heard in neither channel: drawn in the middle"]


def test_pans_and_layers_must_match():
    with pytest.raises(ValueError, match="1 pans for 2 layers"):
        place(layers(2), [0.0], centre=0.2)
