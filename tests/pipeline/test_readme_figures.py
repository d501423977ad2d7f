"""README's demo figures are the demo's own: the zero-shot table (README and docs/pipeline.md) and the contact sheet
are what `a2i demo` produces, and this test fails when they drift (before: README said the mean baseline scores
0.125, the demo gave 0.0, and the committed sheet differed visibly from the one the demo draws).

To refresh them after a change that moves the figures: `make demo`, then copy `.demo/metrics/contact_sheet.png` to
`docs/demo_contact_sheet.png` and the values this test prints into both tables.
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
MAX_MEAN_PIXEL_DIFF = 2.0  # of 255: another CPU's float rounding moves a pixel by one or two, a new picture by tens


def _table(path) -> dict[str, float]:
    text = path.read_text()
    start = text.index("| column | conditioning | zero-shot top-1 |")
    return {row: float(value) for row, value in TABLE_ROW.findall(text[start:text.index("\n\n", start)])}


@pytest.mark.parametrize("page", ["README.md", "docs/pipeline.md"])
def test_the_zero_shot_table_is_the_demos(demo_workspace, page):
    scores = json.loads((demo_workspace[0] / "metrics" / "image_eval.json").read_text())
    demo = {row: values["zero_shot_top1"] for row, values in scores.items() if isinstance(values, dict)}
    written = _table(ROOT / page)
    assert set(written) == set(demo), (written, demo)
    drifted = {row: f"{demo[row]:.2f}" for row in demo if abs(written[row] - demo[row]) > 0.005}
    assert not drifted, f"{page}'s table says {written}; the demo gives these (2 decimals): {drifted}"


def test_the_committed_contact_sheet_is_the_demos(demo_workspace):
    drawn = np.asarray(Image.open(demo_workspace[0] / "metrics" / "contact_sheet.png").convert("RGB"), np.float32)
    committed = np.asarray(Image.open(SHEET).convert("RGB"), np.float32)
    assert drawn.shape == committed.shape, (drawn.shape, committed.shape)
    diff = float(np.abs(drawn - committed).mean())
    assert diff <= MAX_MEAN_PIXEL_DIFF, f"{SHEET} differs from the demo's sheet by {diff:.1f} per pixel channel"
