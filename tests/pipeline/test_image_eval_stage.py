"""The field's measures on the demo: the download stage's reference frames, every row's AIC, CLIP score, IIS, R@k,
FID and KID in one table, and the targets the measures must meet on the offline demo's tiny models."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from PIL import Image

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.manifest import load_manifest
from a2i_core.pipeline.image_eval import SHUFFLED
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
ROWS = ["true_prompt", "mapper", "mapper_fill_nearest_prompts", "mapper_fill_zeros", "mapper_layered", SHUFFLED,
        "baseline_mean"]
CELL = re.compile(r"^\| ([a-z ]+) \| (\d+) \| (.+) \| (\d+) \|$", re.M)


def _report(ws) -> dict:
    return json.loads((ws / "metrics" / "image_eval_report.json").read_text())


def test_every_evaluated_clip_has_its_frame(demo_workspace):
    ws, _ = demo_workspace
    candidates = shards.read_table(ws / "data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    evaluated = set(candidates.loc[candidates["split"].isin(["test", "heldout"]), "clip_id"])
    manifest = load_manifest(ws / "data" / "frames")
    assert set(manifest["clip_id"]) == evaluated and set(manifest["status"]) == {"ok"}
    counts = json.loads((ws / "metrics" / "download.json").read_text())["frames"]
    assert counts == {"ok": len(evaluated)}
    with Image.open(ws / "data" / "frames" / manifest["path"].iloc[0]) as frame:
        assert max(frame.size) <= 512 and min(frame.size) >= 32


def test_every_row_and_measure_with_its_image_count(demo_workspace):
    ws, _ = demo_workspace
    report = _report(ws)
    rows = report["rows"]
    assert sorted(rows) == sorted(ROWS)
    index = pd.read_csv(ws / "metrics" / "render_index.csv")
    n = int((index["row"] == "mapper").sum())
    for name, row in rows.items():
        assert row["images"] == row["images_with_frame"] == n, name
        for key in ("aic", "clip_score", "iis", "iis_rank", "r@1", "r@5", "fid", "kid"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (name, key)  # FID and KID for every row
    assert report["labels"] == 8 and report["chance"]["aic"] == 1 / 8
    assert "CLIP" in report["features"]["fid_kid"] and report["frames"] == {"clips": n, "with_frame": n,
                                                                            "missing": {}}
    table = (ws / "metrics" / "image_eval_table.md").read_text()
    written = [(name.replace(" ", "_"), int(images), int(framed)) for name, images, _, framed in CELL.findall(table)]
    assert written == [(name, n, n) for name in ROWS]  # upper bound first, the control and the lower bound last
    scores = pd.read_csv(ws / "metrics" / "image_scores.csv")
    assert scores.loc[scores["row"] == SHUFFLED, "aic"].mean() == pytest.approx(rows[SHUFFLED]["aic"])


def test_the_targets_on_the_demo(demo_workspace):
    rows = _report(demo_workspace[0])["rows"]
    chance, n = 1 / 8, rows[SHUFFLED]["images"]
    noise = 2 * math.sqrt(chance * (1 - chance) / n)  # two binomial standard deviations of n verdicts at chance
    assert abs(rows[SHUFFLED]["aic"] - chance) <= noise, rows[SHUFFLED]
    assert rows["mapper"]["aic"] - rows[SHUFFLED]["aic"] >= 0.5
    assert rows["true_prompt"]["fid"] < rows["baseline_mean"]["fid"]
    assert rows["true_prompt"]["kid"] < rows["baseline_mean"]["kid"]
    # the shuffled row pairs the mapper's own images with other sounds: paired measures fall, set measures stay
    assert rows[SHUFFLED]["fid"] == pytest.approx(rows["mapper"]["fid"], rel=1e-6)  # the order of a sum, no more
    assert rows[SHUFFLED]["iis"] < rows["mapper"]["iis"]


def test_readme_shows_the_demos_table(demo_workspace):
    made = (demo_workspace[0] / "metrics" / "image_eval_table.md").read_text()
    readme = (ROOT / "README.md").read_text()

    def numbers(text: str) -> dict[str, list[float]]:
        return {name: [float(v) for v in re.findall(r"-?[0-9.]+(?:e-?\d+)?", cells)]
                for name, _, cells, _ in CELL.findall(text)}

    demo, shown = numbers(made), numbers(readme)
    assert set(shown) == set(demo), (set(shown), set(demo))
    for name, values in demo.items():
        assert shown[name] == pytest.approx(values, rel=0.05, abs=0.006), (name, values)  # another CPU's rounding
