"""The mapper's model card (README.md): Hub metadata that parses, Markdown no label can break, written at train time
inside the mapper folder, and the same bytes when the same mapper is trained again."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard
from ruamel.yaml import YAML

from a2i_core.mapper.artifact import CARD_NAME, MapperArtifact
from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig
from a2i_core.mapper.model_card import MAX_LABELS, MAX_TEXT, DataSummary, TrainingSummary, base_model, md, model_card
from a2i_core.offline.workspace import tool_env
from tests.conftest import offline
from tests.mapper.test_model import PROVENANCE

HOSTILE = ["a|b", "*bold* _it_", "<script>alert(1)</script>", "line\nbreak", "[link](https://example.com)",
           "`code`", "$x^2$", "nul\x00here", "# heading", "---", "para\u2028sep", "&lt;not a tag&gt;", "x" * 10_000,
           "back\\slash|", "~~struck~~", "<!-- comment", "| --- |", "https://evil.example/login", "www.evil.com",
           "me@evil.com", "//localhost/x", "dog"]
# Text the Hub's Markdown (GFM autolinks) or markdown-it's linkify would turn into a link were it left as it is.
BARE_LINKS = ["https://evil.example/login", "www.evil.com", "evil.com", "see me@evil.com", "http://localhost:8080/x",
              "x //localhost/y", "mailto:a@b", "HTTPS://EVIL.EXAMPLE", "ftp://x.y", "пример.рф", "README.md",
              "go to https://a.b/c?d=e#f.", "javascript:alert(1)"]
TRAINING = TrainingSummary(offline("train", lr=3e-4, seed=7), best_epoch=12, stopped_epoch=32, best_val_loss=0.123456,
                           best_val_cosine=0.87654)


def _config(diffusion_model: str = "tiny", **changes) -> MapperConfig:
    provenance = dataclasses.replace(PROVENANCE, diffusion_model=diffusion_model)
    return MapperConfig(in_dim=8, pooled_dim=4, hidden=[16], dropout=[0.1], provenance=provenance, **changes)


def _data(labels: list[str], source: str = "folder") -> DataSummary:
    splits = ["train", "val", "test", "heldout"]
    rows = [(f"c{i}", label, f"an image of {label}", splits[i % 4]) for i, label in enumerate(labels)]
    return DataSummary.of(pd.DataFrame(rows, columns=["clip_id", "label", "prompt", "split"]), source)


def _front_matter(card: str) -> dict:
    # huggingface_hub's own parser: what the Hub reads from the card.
    return ModelCard(card, ignore_metadata_errors=False).data.to_dict()


def _markdown(linkify: bool):
    markdown_it = pytest.importorskip("markdown_it")
    if linkify:
        pytest.importorskip("linkify_it", reason="linkify-it-py (markdown-it's linkify) is not installed")
    renderer = markdown_it.MarkdownIt("commonmark", {"linkify": linkify}).enable(["table", "strikethrough"])
    return renderer.enable("linkify") if linkify else renderer


def _html(card: str) -> str:
    """The card's body as the Hub shows it: tables, and bare URLs made links when linkify-it-py is installed."""
    try:
        import linkify_it  # noqa: F401
    except ImportError:
        renderer = _markdown(linkify=False)
    else:
        renderer = _markdown(linkify=True)
    return renderer.render(card.split("\n---\n", 1)[1])


def test_hostile_labels_stay_literal_text_in_their_own_cell():
    card = model_card(_config(), _data(HOSTILE), TRAINING)
    card.encode("utf-8")  # every character can be written
    page = _html(card)
    assert "<script" not in page and "<!--" not in page
    data_section = page.split("<h2>Data</h2>")[1].split("<h2>")[0]
    assert set(re.findall(r"</?([a-z0-9]+)", data_section)) <= {"ul", "li", "p", "table", "thead", "tbody", "tr", "th",
                                                                  "td"}  # no link, emphasis, code, heading, rule
    labels_table = page.split("<th>label</th>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", labels_table.split("</thead>")[1], re.S)
    assert len(rows) == len(HOSTILE)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    assert all(len(c) == 5 for c in cells)  # label, train, val, test, heldout: a "|" never splits a cell
    shown = {html.unescape(c[0]) for c in cells}
    for label in HOSTILE:
        visible = " ".join(label.replace("\x00", " ").replace("\u2028", " ").split())
        assert visible in shown or (len(visible) > MAX_TEXT and f"{visible[:MAX_TEXT - 1]}…" in shown), label


def test_md_escapes_and_cuts():
    assert md("a|b*c_<d>&") == "a\\|b\\*c\\_&lt;d&gt;&amp;"
    assert md("one\ntwo\r\nthree\tfour") == "one two three four"
    assert md("x" * 500, limit=10) == "x" * 9 + "…"
    assert md("\ud800").encode("utf-8")


def test_no_value_forms_an_autolink():
    # Every ".", ":" and second "/" of "//" is escaped: each escape is a text run of its own, so no run holds a
    # scheme, a dotted domain, an e-mail address or a //host, whatever the renderer's autolink rules.
    for value in BARE_LINKS:
        runs = re.split(r"\\.", md(value))
        assert not [r for r in runs if "." in r or ":" in r or "//" in r], (value, md(value))


def test_no_value_becomes_a_link_with_markdown_it_linkify():
    renderer = _markdown(linkify=True)
    for value in BARE_LINKS:
        if value not in ("javascript:alert(1)",):  # linkify knows no such scheme: nothing to defeat
            assert "<a " in renderer.render(value), value  # linkify does link the raw text
        page = renderer.render(md(value))
        assert "<a " not in page, (value, page)
        assert html.unescape(page) == f"<p>{value}</p>\n"  # and shows it as it is
    card = model_card(_config("stabilityai/stable-diffusion-3-medium-diffusers@main"), _data(HOSTILE + BARE_LINKS),
                      TRAINING)
    assert "<a " not in renderer.render(card.split("\n---\n", 1)[1])


def test_front_matter_is_hub_metadata_from_fixed_values_and_checked_ids():
    sd3 = "stabilityai/stable-diffusion-3-medium-diffusers"
    meta = _front_matter(model_card(_config(f"{sd3}@0123abcd"), _data(["dog"], "audioset"), TRAINING))
    assert meta == {"library_name": "a2i", "license": "other", "license_name": "a2i-mapper",
                    "tags": ["audio-to-image", "stable-diffusion-3", "vggish", "a2i"],
                    "base_model": sd3, "base_model_relation": "adapter", "datasets": ["agkphysics/AudioSet"]}
    assert _front_matter(model_card(_config(), _data(["dog"], "synthetic"), TRAINING)) == {
        "library_name": "a2i", "license": "other", "license_name": "a2i-mapper", "tags": meta["tags"]}
    assert _front_matter(model_card(_config(), _data(["dog"], "esc50"), TRAINING))["datasets"] == ["ashraq/esc50"]
    assert _front_matter(model_card(_config(), _data(["dog"], "audiocaps"), TRAINING))["datasets"] == ["d0rj/audiocaps"]
    assert "datasets" not in _front_matter(model_card(_config(), _data(["dog"], "folder"), TRAINING))
    # Only a Hub id makes a base model: not the tiny model, a local directory, or anything that is no id.
    assert base_model(sd3) == sd3 and base_model(f"{sd3}@main") == sd3
    for other in ("tiny", "/home/me/sd3", "./sd3", "a/b/c", "x: y\n- z", "owner/name@../../x"):
        assert base_model(other) is None, other


def _licence(card: str) -> str:
    return card.split("## Licence\n", 1)[1].split("\n## ", 1)[0]


def test_the_licence_section_names_the_terms_the_weights_follow():
    sd3 = "stabilityai/stable-diffusion-3-medium-diffusers"
    esc50 = _licence(model_card(_config(f"{sd3}@0123abcd"), _data(["dog"], "esc50"), TRAINING))
    assert "ESC-50" in esc50 and "CC BY-NC 3.0" in esc50 and "non-commercial" in esc50
    assert sd3 in esc50.replace("\\", "") and "its own licence" in esc50
    assert "a2i's code" in esc50 and "Apache-2.0" in esc50 and "does not cover these\n  weights" in esc50
    audioset = _licence(model_card(_config(), _data(["dog"], "audioset"), TRAINING))
    assert "AudioSet" in audioset and "CC BY 4.0" in audioset and "YouTube" in audioset
    assert "non-commercial" not in audioset and "tiny offline model" in audioset
    assert "AudioCaps" in _licence(model_card(_config(), _data(["dog"], "audiocaps"), TRAINING))
    assert "cannot know their terms" in _licence(model_card(_config(), _data(["dog"], "folder"), TRAINING))
    assert "no third-party data" in _licence(model_card(_config(), _data(["dog"], "synthetic"), TRAINING))
    local = _licence(model_card(_config("/home/me/sd3"), _data(["dog"], "some|new source"), TRAINING))
    assert "the local model /home/me/sd3" in local.replace("\\", "") and "some\\|new source: see its terms" in local
    assert "`license: other`" in esc50


def test_card_says_what_was_trained_and_caps_long_label_lists():
    labels = [f"class {i:03d}" for i in range(MAX_LABELS + 25) for _ in range(1 + i % 3)]
    config = _config("tiny", tokens=2, token_width=8, input="frames", frames_width=16, frames_layers=1, max_frames=4)
    card = model_card(config, _data(labels, "folder"), TRAINING)
    assert card == model_card(config, _data(labels, "folder"), TRAINING)  # deterministic: no time, no order by chance
    assert f"Pairs per label ({MAX_LABELS} of {MAX_LABELS + 25}, most pairs first)" in card
    assert card.count("| class ") == MAX_LABELS
    assert "| best epoch | 12 (stopped after 32) |" in card and "| best val loss | 0.1235 |" in card
    assert "learning rate 0.0003" in card and "| seed | 7 |" in card and "first 2 sequence tokens" in card
    assert f"`{PROVENANCE.encoder_sha256}`" in card and "| sequence embedding | 109 × 32 |" in card
    assert "a2i generate sound.wav --mapper" in card and "SoundToImage.from_pretrained(" in card


def test_save_writes_the_card_inside_the_artifact(tmp_path):
    mapper = AudioToSD3Mapper(_config())
    artifact = MapperArtifact(mapper, np.zeros(4, np.float32), np.zeros((109, 32), np.float32), ["a", "b"],
                              np.ones((2, 4), np.float32))
    card = model_card(mapper.config, _data(["chien", "狗", "собака"]), TRAINING)
    artifact.save(tmp_path / "m", card)
    assert (tmp_path / "m" / CARD_NAME).read_bytes() == card.encode("utf-8")
    assert MapperArtifact.load(tmp_path / "m").prompts == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name != "m"]  # nothing left beside it
    artifact.save(tmp_path / "m")  # no card given: none written (a swap, so the old one goes too)
    assert not (tmp_path / "m" / CARD_NAME).exists()


def test_the_train_stage_writes_the_card(demo_workspace):
    ws = demo_workspace[0]
    card = (ws / "models/mapper" / CARD_NAME).read_text(encoding="utf-8")
    meta = _front_matter(card)
    assert meta["library_name"] == "a2i" and "base_model" not in meta and "datasets" not in meta  # tiny, synthetic
    params = YAML(typ="safe", pure=True).load((ws / "params.yaml").read_text())
    for label in params["data"]["synthetic"]["classes"]:
        assert re.search(rf"^\| {label} \| \d+ \| \d+ \| \d+ \|$", card, re.M), label
    metrics = json.loads((ws / "metrics/train.json").read_text())
    assert f"| best epoch | {metrics['best_epoch']} (stopped after {metrics['stopped_epoch']}) |" in card
    assert f"| best val cosine | {metrics['best_val_cosine']:.4f} |" in card
    assert "- Source: synthetic" in card


def test_training_again_writes_the_same_card_and_dvc_sees_no_change(demo_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], ws, symlinks=True)
    before = (ws / "dvc.lock").read_text()
    card = (ws / "models/mapper" / CARD_NAME).read_bytes()
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "train"], cwd=ws, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Running stage 'train'" in result.stdout
    assert (ws / "models/mapper" / CARD_NAME).read_bytes() == card
    assert _outs(ws / "dvc.lock", "train") == _outs_text(before, "train")


def _outs(lock: Path, stage: str) -> dict:
    return _outs_text(lock.read_text(), stage)


def _outs_text(text: str, stage: str) -> dict:
    lock = YAML(typ="safe", pure=True).load(text)
    return {out["path"]: out.get("md5") for out in lock["stages"][stage]["outs"] if out["path"] == "models/mapper"}
