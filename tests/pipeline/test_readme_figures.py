"""README's demo figures are the demo's own: the zero-shot table (README and docs/pipeline.md) and the contact sheet
are what `a2i demo` produces, and this test fails when they drift (before: README said the mean baseline scores
0.125, the demo gave 0.0, and the committed sheet differed visibly from the one the demo draws).

To refresh them after a change that moves the figures: `make demo`, then copy `.demo/metrics/contact_sheet.png` to
`docs/demo_contact_sheet.png`, `.demo/metrics/timelines/timeline-00/storyboard.png` and `film.webp` to
`docs/demo_storyboard.png` and `docs/demo_film.webp`, `.demo/metrics/mixtures_sheet.png` to `docs/demo_layers.png`,
and the values this test prints into the tables and text.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
TABLE_ROW = re.compile(r"^\| `(\w+)` \| .* \| ([0-9.]+) \|$", re.M)
SHEET = ROOT / "docs" / "demo_contact_sheet.png"
STORYBOARD = ROOT / "docs" / "demo_storyboard.png"
FILM_PREVIEW = ROOT / "docs" / "demo_film.webp"
LAYERS = ROOT / "docs" / "demo_layers.png"
MIXTURE_FIGURES = {  # each as README and docs/layers.md write it
    "recall_at_2": re.compile(r"(?:finds both sounds \(recall@2\) |0 dB \(`recall_at_2`; head / nnls\) \| )([0-9.]+)"),
    "recall_at_2_single": re.compile(r"(?:two nearest prompts find |head / nnls\) \| [0-9.]+ / [0-9.]+ \| )([0-9.]+)"),
    "halves_stereo": re.compile(r"(?:with stereo placement |\(`halves_stereo`; by score\) \| )([0-9.]+)"),
}
TIMELINE_FIGURES = {  # each as README and docs/timeline.md write it
    "segment_f1": re.compile(r"segment(?:-based)?\s+F1\s+\**([0-9.]+)\**"),
    "keyframes_zero_shot_top1": re.compile(r"(?:keyframes zero-shot \**|right sound for )([0-9.]+)"),
}
MAX_MEAN_PIXEL_DIFF = 2.0  # of 255: another CPU's float rounding moves a pixel by one or two, a new picture by tens


def _table(path) -> dict[str, float]:
    text = path.read_text()
    start = text.index("| column | conditioning | AIC |")
    return {row: float(value) for row, value in TABLE_ROW.findall(text[start:text.index("\n\n", start)])}


@pytest.mark.parametrize("page", ["README.md", "docs/pipeline.md"])
def test_the_aic_table_is_the_demos(demo_workspace, page):
    scores = json.loads((demo_workspace[0] / "metrics" / "image_eval.json").read_text())
    demo = {row: values["aic"] for row, values in scores.items()}
    written = _table(ROOT / page)
    assert set(written) == set(demo), (written, demo)
    drifted = {row: f"{demo[row]:.2f}" for row in demo if abs(written[row] - demo[row]) > 0.005}
    assert not drifted, f"{page}'s table says {written}; the demo gives these (2 decimals): {drifted}"


@pytest.mark.parametrize(("committed", "drawn"), [(SHEET, "contact_sheet.png"),
                                                  (STORYBOARD, "timelines/timeline-00/storyboard.png"),
                                                  (LAYERS, "mixtures_sheet.png")],
                         ids=["contact sheet", "storyboard", "layers"])
def test_the_committed_pictures_are_the_demos(demo_workspace, committed, drawn):
    made = np.asarray(Image.open(demo_workspace[0] / "metrics" / drawn).convert("RGB"), np.float32)
    shown = np.asarray(Image.open(committed).convert("RGB"), np.float32)
    assert made.shape == shown.shape, (made.shape, shown.shape)
    diff = float(np.abs(made - shown).mean())
    assert diff <= MAX_MEAN_PIXEL_DIFF, f"{committed} differs from the demo's {drawn} by {diff:.1f} per pixel channel"


def test_the_committed_film_preview_is_the_demos(demo_workspace):
    with Image.open(demo_workspace[0] / "metrics" / "timelines" / "timeline-00" / "film.webp") as made, \
            Image.open(FILM_PREVIEW) as shown:
        assert (made.n_frames, made.size) == (shown.n_frames, shown.size)


@pytest.mark.parametrize("page", ["README.md", "docs/timeline.md"])
def test_the_timeline_figures_are_the_demos(demo_workspace, page):
    report = json.loads((demo_workspace[0] / "metrics" / "timeline.json").read_text())
    text = (ROOT / page).read_text()
    for key, pattern in TIMELINE_FIGURES.items():
        written = [float(v) for v in pattern.findall(text)]
        assert written and all(abs(v - report[key]) <= 0.005 for v in written), \
            f"{page} says {key} {written}; the demo gives {report[key]:.2f}"


@pytest.mark.parametrize("page", ["README.md", "docs/layers.md"])
def test_the_mixture_figures_are_the_demos(demo_workspace, page):
    report = json.loads((demo_workspace[0] / "metrics" / "mixtures_report.json").read_text())
    text = (ROOT / page).read_text()
    for key, pattern in MIXTURE_FIGURES.items():
        written = [float(v) for v in pattern.findall(text)]
        assert written and all(abs(v - report[key]) <= 0.005 for v in written), \
            f"{page} says {key} {written}; the demo gives {report[key]:.2f}"
