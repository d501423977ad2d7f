"""`a2i generate --layers` on the demo's models: a mixture of two sounds drawn as layers (regions or one joint
sequence), placed by score, a grid or the channels; a one-source clip drawn exactly as without layers; each PNG's
text records the layers; every odd input (mono, 5.1, opposite phase, one silent channel, too many layers for the
size) is one line, with nothing lost."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from a2i_core import cli
from a2i_core.core.audio_io import SAMPLE_RATE
from a2i_core.diffusion.images import SETTINGS_KEY, png_text
from tests.helpers import manual_commands

pytestmark = pytest.mark.e2e


def _generate(*args: str) -> SimpleNamespace:
    """`a2i generate` in this process (the models' imports paid once for many runs), with its streams."""
    result = CliRunner().invoke(cli.app, ["generate", *args, "--device", "cpu"])
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="module")
def mixtures(demo_workspace) -> tuple[Path, pd.DataFrame]:
    folder = demo_workspace[0] / "data" / "mixtures"
    return folder, pd.read_csv(folder / "mixtures.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def panned(mixtures) -> tuple[Path, str, str]:
    """A hard-panned mixture: (its file, the left sound's prompt, the right sound's)."""
    folder, table = mixtures
    row = table[table["panned"].astype(str) == "True"].iloc[0]
    return folder / row["file"], row["first"], row["second"]


def _layering(png: Path) -> dict:
    return json.loads(png_text(png)[SETTINGS_KEY])["layering"]


@pytest.mark.parametrize("mode", ["regions", "joint"])
def test_a_panned_mixture_is_drawn_as_layers_placed_by_its_channels(demo_workspace, panned, tmp_path, mode):
    path, left, right = panned
    result = _generate(str(path), "--out", str(tmp_path), "--project", str(demo_workspace[0]), "--layers", mode,
                       "--layout", "stereo")
    assert result.returncode == 0, result.stderr[-3000:]
    layering = _layering(tmp_path / f"{path.stem}.png")
    assert layering["mode"] == mode and {left, right} <= {layer["label"] for layer in layering["layers"]}
    assert "layers" in result.stdout
    if mode == "joint":  # one sequence places nothing: the text says no place
        assert "layout" not in layering and all(set(layer) == {"label", "score"} for layer in layering["layers"])
    else:
        places = {layer["label"]: layer["x"] for layer in layering["layers"]}
        assert layering["layout"] == "stereo" and places[left] < 0.5 < places[right], places


def test_a_one_source_clip_layered_is_the_single_image_pixel_for_pixel(demo_workspace, tmp_path):
    ws = demo_workspace[0]
    for clip in sorted((ws / "data" / "audio").glob("dog_*"))[:4]:  # the first the label head hears as one sound
        layered = _generate(str(clip), "--out", str(tmp_path / "layered"), "--project", str(ws), "--layers", "regions")
        assert layered.returncode == 0, layered.stderr[-3000:]
        png = f"{clip.stem}.png"
        if len(_layering(tmp_path / "layered" / png)["layers"]) == 1:
            break
    else:
        pytest.fail("the label head heard two sounds in each of four dog clips")
    assert [layer["label"] for layer in _layering(tmp_path / "layered" / png)["layers"]] == [
        "an image of a barking dog"]
    single = _generate(str(clip), "--out", str(tmp_path / "single"), "--project", str(ws))
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = (np.asarray(Image.open(tmp_path / kind / png)) for kind in ("single", "layered"))
    assert np.array_equal(a, b)


def _stereo_file(path: Path, left: np.ndarray, right: np.ndarray) -> Path:
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def sources(mixtures) -> tuple[np.ndarray, np.ndarray]:
    """Two test clips' waves (the first panned mixture's channels)."""
    folder, table = mixtures
    row = table[table["panned"].astype(str) == "True"].iloc[0]
    wave, _ = sf.read(folder / row["file"], dtype="float32")
    return wave[:, 0], wave[:, 1]


def test_odd_channels_are_one_note_each(demo_workspace, sources, tmp_path):
    left, right = sources
    ws = str(demo_workspace[0])
    mono = tmp_path / "mono.wav"
    sf.write(mono, left, SAMPLE_RATE)
    surround = tmp_path / "surround.wav"
    sf.write(surround, np.stack([left, right, left * 0, left * 0, left, right], axis=1), SAMPLE_RATE)
    cases = {mono: "mono: every sound goes to the middle",
             surround: "6 channels downmixed to stereo",
             _stereo_file(tmp_path / "opposite.wav", left, -left): "opposite phase",
             _stereo_file(tmp_path / "one_side.wav", left, np.zeros_like(left)): "its right channel is silent"}
    for path, note in cases.items():
        result = _generate(str(path), "--out", str(tmp_path / "out"), "--project", ws, "--layers", "regions",
                           "--layout", "stereo")
        assert result.returncode == 0, (path.name, result.stderr[-2000:])
        assert note in result.stderr, (path.name, result.stderr)
        assert (tmp_path / "out" / f"{path.stem}.png").is_file()


def test_layer_options_that_cannot_work_are_one_line(demo_workspace, panned, tmp_path):
    path, _, _ = panned
    ws = str(demo_workspace[0])
    lone = _generate(str(path), "--out", str(tmp_path), "--project", ws, "--layout", "stereo")
    assert lone.returncode == 1 and "--layout places layers: give --layers" in lone.stderr
    small = _generate(str(path), "--out", str(tmp_path), "--project", ws, "--layers", "regions", "--size", "64")
    assert small.returncode == 1 and "do not fit in an image of 64 px" in small.stderr
    wrong = _generate(str(path), "--out", str(tmp_path), "--project", ws, "--layers", "everywhere")
    assert wrong.returncode == 2 and "everywhere" in wrong.stderr
    headless = _generate(str(path), "--out", str(tmp_path), "--project", ws, "--layers", "joint", "--label-head",
                         str(tmp_path / "nowhere"))
    assert headless.returncode == 1 and "no label head" in headless.stderr
    assert not list(tmp_path.glob("*.png"))  # nothing half made


def test_the_manual_s_layered_commands_run(demo_workspace, panned, tmp_path):
    commands = [shlex.split(line) for line in manual_commands("a2i generate") if "--layers" in line]
    assert len(commands) >= 2  # README's and docs/layers.md's, regions and joint
    for k, argv in enumerate(commands):
        args = argv[2:]  # after `a2i generate`
        args[0] = str(panned[0])  # the reader's own recording: here a panned mixture
        args[args.index("--out") + 1] = str(tmp_path / str(k))
        args[args.index("--project") + 1] = str(demo_workspace[0])
        result = _generate(*args)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert list((tmp_path / str(k)).glob("*.png"))
