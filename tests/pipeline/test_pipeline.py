"""End to end: the real `dvc repro` on the offline profile in a temporary git repository, through `a2i demo`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from ruamel.yaml import YAML

from a2i_core.audio.features import load_audio_embeddings
from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.manifest import load_manifest
from a2i_core.diffusion.images import SHEET_CELL, SHEET_LABEL_WIDTH
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_text_features
from a2i_core.mapper.model import AudioToSD3Mapper
from a2i_core.offline.workspace import commit
from a2i_core.pipeline import mixtures
from tests.conftest import ROOT
from tests.helpers import dvc, lighten, manual_commands

pytestmark = pytest.mark.e2e
PROTECTED = ("params.yaml", "dvc.yaml", "dvc.lock")
PROTECTED_DIGESTS = {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() if (ROOT / name).exists()
                     else None for name in PROTECTED}  # taken at import, before any fixture runs the demo
STAGES = ["check_params", "sources", "ingest", "download", "audio_encoder", "encoders", "embed_audio", "embed_text",
          "train", "evaluate", "render_reference", "label_head", "render", "image_eval", "timeline", "mixtures"]
MAPPER_ROWS = ["mapper", "mapper_fill_zeros", "mapper_fill_nearest_prompts", "mapper_layered"]  # render's, in order
REFERENCE_ROWS = ["true_prompt", "baseline_mean"]  # the render_reference stage's: no mapper takes part
ROWS = sorted(MAPPER_ROWS + REFERENCE_ROWS)
IMAGE_DIRS = ["metrics/images", "metrics/images_reference"]


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def _dvc(workspace: Path, *args: str) -> str:
    result = dvc(workspace, *args)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workspace(demo_workspace, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the demo workspace, git and DVC cache included: the experiments below change their workspace, and the
    demo's is shared with every other end-to-end test. Its label head, mixtures and timeline evaluation are made
    light (tests.helpers.LIGHT_EVALUATION) and committed, reproduced, as its baseline: every experiment reruns them."""
    # The demo must leave the project's own params.yaml, dvc.yaml and dvc.lock alone.
    assert {name: _digest(ROOT / name) for name in PROTECTED} == PROTECTED_DIGESTS
    copy = tmp_path_factory.mktemp("experiments") / "ws"
    shutil.copytree(demo_workspace[0], copy, symlinks=True)
    yaml = YAML()
    params = lighten(yaml.load((copy / "params.yaml").read_text()))
    with open(copy / "params.yaml", "w") as f:
        yaml.dump(params, f)
    assert _ran(_dvc(copy, "repro")) == ["check_params", "sources", "label_head", "render", "image_eval", "timeline",
                                         "mixtures"]
    commit(copy, "light evaluation of the label head, mixtures and timeline")
    return copy, demo_workspace[1]


def test_every_stage_ran_and_wrote_valid_outputs(workspace):
    ws, output = workspace
    assert _ran(output) == STAGES
    candidates = shards.read_table(ws / "data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    assert len(candidates) == 240 and set(candidates["split"]) == {"train", "val", "test"}  # the demo's 8 x 30
    manifest = load_manifest(ws / "data/audio")
    assert (manifest["status"] == "ok").all() and len(manifest) == 240
    ids, audio, meta = load_audio_embeddings(ws / "data/features/audio")
    assert sorted(ids) == sorted(candidates["clip_id"]) and audio.shape == (240, 128) and np.isfinite(audio).all()
    prompts, pooled = load_text_features(ws / "data/features/text")
    assert sorted(prompts) == sorted(candidates["prompt"].unique()) and pooled.shape == (8, 64)
    assert load_guidance(ws / "data/features/text")[1].shape == (77 + 32, 32)
    mapper = AudioToSD3Mapper.from_pretrained(ws / "models/mapper")
    assert mapper.config.out_dim == 64 and mapper.config.provenance.postprocess is False

    eval_metrics = json.loads((ws / "metrics/eval.json").read_text())
    assert eval_metrics["chance_top1"] == 1 / 8 and 0 <= eval_metrics["top1"] <= 1
    assert eval_metrics["top1"] > eval_metrics["baseline_top1"]
    report = json.loads((ws / "metrics/eval_report.json").read_text())
    assert {k: report[k] for k in ("top1", "mse")} == {k: eval_metrics[k] for k in ("top1", "mse")}
    assert report["pairs"] == len(candidates.query("split == 'test'")) and "combined" in report["baseline_mean"]
    render = json.loads((ws / "metrics/render.json").read_text())
    reference = json.loads((ws / "metrics/render_reference.json").read_text())
    n_clips = candidates.query("split == 'test'")["label"].nunique()
    assert sorted(p.name for p in (ws / "metrics/images").iterdir()) == sorted(MAPPER_ROWS)
    assert sorted(p.name for p in (ws / "metrics/images_reference").iterdir()) == sorted(REFERENCE_ROWS)
    images = sorted(p for d in IMAGE_DIRS for p in (ws / d).glob("*/*.png"))
    assert len(images) == len(ROWS) * n_clips and reference["true_prompt_sequence"] == "full"
    assert (render["images"], reference["images"]) == (len(MAPPER_ROWS) * n_clips, len(REFERENCE_ROWS) * n_clips)
    # Both stages drew the same clips, in the same order, with the same seeds (the rows' images of a clip line up).
    index = pd.read_csv(ws / "metrics/render_index.csv")
    reference_index = pd.read_csv(ws / "metrics/render_reference_index.csv")
    clips = index.query("row == 'mapper'")["clip_id"].tolist()
    assert len(clips) == n_clips and all(part["clip_id"].tolist() == clips
                                         for table in (index, reference_index) for _, part in table.groupby("row"))
    for path in images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
    with Image.open(ws / "metrics/contact_sheet.png") as sheet:  # every row a column, every clip a row
        assert sheet.size == (SHEET_LABEL_WIDTH + SHEET_CELL * len(ROWS), 24 + SHEET_CELL * n_clips)
    image_eval = json.loads((ws / "metrics/image_eval.json").read_text())
    assert set(image_eval) == {*ROWS, "shuffled_audio"}
    scores = pd.read_csv(ws / "metrics/image_scores.csv")
    assert len(scores) == len(images) + n_clips and (scores.groupby("row").size() == n_clips).all()
    for row in [*ROWS, "shuffled_audio"]:
        assert image_eval[row]["aic"] == pytest.approx(scores.query("row == @row")["aic"].mean())
    assert (render["rows"], reference["rows"]) == (MAPPER_ROWS, REFERENCE_ROWS)
    curve = (ws / "metrics/train/plots/metrics/val_loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "val_loss"] and len(curve) > 5


def test_the_pictures_follow_the_sound(workspace):
    """The fitted tiny SD3 and CLIP (encoders stage) make image_eval measure steering: a render path that ignored
    the predicted embedding would draw one picture for every sound, as the mean baseline does."""
    image_eval = json.loads((workspace[0] / "metrics/image_eval.json").read_text())
    top1 = {row: values["aic"] for row, values in image_eval.items() if row in ROWS}
    assert top1["true_prompt"] >= 0.9 and top1["baseline_mean"] <= 0.3, top1
    assert top1["mapper"] >= 0.8 and top1["mapper_fill_nearest_prompts"] >= 0.8, top1


def test_second_repro_does_nothing(workspace):
    ws, _ = workspace
    output = _dvc(ws, "repro")
    # `sources` always runs (only it can tell whether local recordings changed); its files did not change.
    assert _ran(output) == ["sources"] and "didn't change, skipping" in output
    assert _dvc(ws, "status").split() == ["sources:", "always", "changed"]


def test_metrics_are_the_headline_numbers(workspace):
    # Counts, timings and settings are reports (plain outputs), not metrics: `dvc metrics show` and `dvc exp show`
    # list the numbers that compare experiments, and nothing per label or per split.
    ws, _ = workspace
    shown = json.loads(_dvc(ws, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert sorted(files) == ["metrics/eval.json", "metrics/image_eval.json", "metrics/mixtures.json",
                             "metrics/timeline.json"]
    assert sorted(files["metrics/timeline.json"]["data"]) == sorted(
        ["segment_f1", "event_f1", "keyframes_zero_shot_top1", "flicker_inside", "flicker_across"])
    assert sorted(files["metrics/mixtures.json"]["data"]) == sorted(mixtures.HEADLINE)
    evaluation = files["metrics/eval.json"]["data"]
    assert sorted(evaluation) == sorted(["top1", "top5", "mrr", "cosine", "mse", "baseline_top1", "chance_top1"])
    assert all(set(values) == {"aic"}
               for row, values in files["metrics/image_eval.json"]["data"].items() if row in ROWS and row != "mapper")


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*.png"))}


def test_experiment_reruns_only_train_and_after(workspace):
    # The reference rows need no mapper: an experiment on the mapper alone draws only the mapper's rows, and
    # leaves the reference images as they were (their files not even rewritten), though every row is scored again.
    ws, _ = workspace
    reference = _files(ws / "metrics/images_reference")
    mapper = _files(ws / "metrics/images")
    output = _dvc(ws, "exp", "run", "-S", "train.epochs=3")
    assert _ran(output) == ["check_params", "sources", "train", "evaluate", "label_head", "render", "image_eval",
                            "timeline", "mixtures"]
    assert "Stage 'render_reference' didn't change, skipping" in output
    assert reference and _files(ws / "metrics/images_reference") == reference
    after = _files(ws / "metrics/images")
    assert after.keys() == mapper.keys() and all(after[name][0] != mapper[name][0] for name in mapper)
    layered = [name for name in mapper if name.startswith("mapper_layered/")]  # a clip of one sound: a copy
    assert json.loads((ws / "metrics/render.json").read_text())["images_rendered"] == len(mapper) - len(layered)
    shuffled = len(layered)  # the control: a line per mapper image (each clip of the demo is one sound)
    assert len(pd.read_csv(ws / "metrics/image_scores.csv")) == len(mapper) + len(reference) + shuffled
    assert json.loads((ws / "metrics/train.json").read_text())["stopped_epoch"] <= 3
    rows = json.loads(_dvc(ws, "exp", "show", "--json"))
    experiments = [exp["revs"][0]["data"] for row in rows for exp in (row.get("experiments") or [])]
    ours = [e for e in experiments if e["params"]["params.yaml"]["data"]["train"]["epochs"] == 3]
    assert ours and "top1" in ours[0]["metrics"]["metrics/eval.json"]["data"]


def test_render_refuses_reference_rows_it_cannot_put_beside_its_own(workspace, tmp_path):
    # Run by hand (outside DVC, which keeps the two stages in step), render could lay another run's reference images
    # beside its own on the sheet: refused in one line naming the file, before anything is rendered or written.
    from a2i_core.core.errors import A2IError
    from a2i_core.core.params import load_params
    from a2i_core.pipeline.render_rows import render_rows

    ws, _ = workspace
    args = shlex.split(YAML(typ="safe", pure=True).load((ws / "dvc.yaml").read_text())["stages"]["render"]["cmd"])
    flags = args[args.index("stages.render") + 1:]
    paths = {flag[2:].replace("-", "_"): ws / value for flag, value in zip(flags[::2], flags[1::2], strict=True)}
    paths.update({name: tmp_path / "out" / name for name in ("images", "sheet", "index", "metrics")})
    index = pd.read_csv(paths["reference_index"])
    params = load_params(ws / "params.yaml")
    cfg = params.render

    other_clips = tmp_path / "other_clips.csv"
    index.groupby("row", sort=False).head(len(index) // 2 - 1).to_csv(other_clips, index=False)  # a clip fewer
    with pytest.raises(A2IError, match=r"other_clips.csv: row 'true_prompt' was drawn for other clips than these"):
        render_rows(cfg, params.layers, **{**paths, "reference_index": other_clips})
    images = tmp_path / "images_reference"
    shutil.copytree(paths["reference_images"], images)
    (images / index["file"].iloc[-1]).unlink()
    with pytest.raises(A2IError, match=re.escape(f"{images / index['file'].iloc[-1]}: missing (1 of the images")):
        render_rows(cfg, params.layers, **{**paths, "reference_images": images})
    assert not (tmp_path / "out").exists()


STATIC_CHARTS = ["metrics/eval_per_class.svg", "metrics/train_curves.svg"]


def _image_plots(plots: dict) -> list[str]:
    return sorted(name for name, entries in plots.items() if entries and all(e["type"] == "image" for e in entries))


def test_plots_show_each_plot_once_with_static_charts(workspace):
    ws, _ = workspace
    shown = json.loads(_dvc(ws, "plots", "show", "--json"))
    assert not shown.get("errors")
    plots = shown["data"]
    images = [str(p.relative_to(ws)) for d in IMAGE_DIRS for p in (ws / d).rglob("*.png")]
    assert _image_plots(plots) == sorted([*images, "metrics/contact_sheet.png", "metrics/mixtures_sheet.png",
                                          *STATIC_CHARTS])
    assert all(len(plots[name]) == 1 for name in _image_plots(plots))  # each image once
    assert sorted(set(plots) - set(_image_plots(plots))) == ["Per-class retrieval (top-1)", "Training curves"]
    # The static charts draw the same numbers: one polyline point per epoch, one bar per class.
    svg = "{http://www.w3.org/2000/svg}"
    curves = ET.parse(ws / "metrics/train_curves.svg").getroot()
    epochs = len((ws / "metrics/train/plots/metrics/val_loss.tsv").read_text().splitlines()) - 1
    assert [len(line.get("points").split()) for line in curves.iter(f"{svg}polyline")] == [epochs, epochs]
    per_class = pd.read_csv(ws / "metrics/eval_per_class.csv")
    bars = ET.parse(ws / "metrics/eval_per_class.svg").getroot()
    assert len([g for g in bars.iter(f"{svg}g") if g.get("class") == "row"]) == len(per_class)

def test_variants_run_as_experiments(workspace):
    ws, _ = workspace
    _dvc(ws, "exp", "run", "-S", "mapper.target=pooled+tokens", "-S", "mapper.input=frames",
         "-S", "render.sequence_fill=nearest_prompts", "-S", "data.heldout_classes=[dog]")
    evaluation = json.loads((ws / "metrics/eval.json").read_text())
    assert "tokens_cosine" in evaluation and "top1" in evaluation["heldout"]
    assert json.loads((ws / "metrics/eval_report.json").read_text())["heldout"]["pairs"] == 30
    assert "dog" not in pd.read_csv(ws / "metrics/eval_per_class.csv").query("split == 'test'")["label"].tolist()
    config = AudioToSD3Mapper.from_pretrained(ws / "models/mapper").config
    assert config.input == "frames" and config.tokens == 20
    render = json.loads((ws / "metrics/render.json").read_text())
    assert render["sequence_fill"] == "nearest_prompts"  # the predicted tokens over a mix of the nearest prompts'
    assert render["rows"][:3] == ["mapper", "mapper_fill_empty_prompt", "mapper_fill_zeros"]
    # The held-out class's clip is drawn too, and each row is scored on it apart.
    for name in ("render_index.csv", "render_reference_index.csv"):  # the held-out classes changed the clips
        index = pd.read_csv(ws / "metrics" / name)
        assert set(index.query("split == 'heldout'")["label"]) == {"dog"} and "dog" in set(index["label"])
    image_eval = json.loads((ws / "metrics/image_eval.json").read_text())
    assert set(image_eval["mapper"]) == {"aic", "fid", "heldout_aic"}
    assert all(set(image_eval[row]) == {"aic"} for row in render["rows"][1:] + REFERENCE_ROWS + ["shuffled_audio"])


@pytest.fixture(scope="module")
def esc50_copy(tmp_path_factory) -> Path:
    """A small ESC-50 copy in the official layout: 4 categories x 5 folds, sounds made by the synthetic classes."""
    from a2i_core.core.audio_io import write_wav
    from a2i_core.data.sources.synthetic import clip_specs, synthesize

    root = tmp_path_factory.mktemp("esc50")
    (root / "meta").mkdir()
    (root / "audio").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    categories = {"dog": "dog", "church_bells": "bell", "siren": "siren", "clock_tick": "clock"}
    for target, (category, synth) in enumerate(categories.items()):
        for fold, spec in enumerate(clip_specs([synth], 5, 1.0, 3.0, seed=target).values(), start=1):
            name = f"{fold}-{1000 + target}{fold}-A-{target}.wav"
            write_wav(root / "audio" / name, synthesize(spec))
            rows.append(f"{name},{fold},{target},{category},False,{1000 + target}{fold},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def test_esc50_eval_set_by_official_folds(workspace, esc50_copy):
    ws, _ = workspace
    output = _dvc(ws, "exp", "run", "-S", f"+eval_sets.esc50={{source: esc50, esc50: {{root: {esc50_copy}}}}}")
    assert _ran(output) == ["check_params", "sources", "eval_set@esc50"]
    report = json.loads((ws / "metrics/eval_sets/esc50_report.json").read_text())
    numbers = json.loads((ws / "metrics/eval_sets/esc50.json").read_text())["eval_sets"]["esc50"]
    assert sorted(numbers) == sorted(["top1", "top5", "mrr", "cosine", "mse", "chance_top1", "top1_fold_std"])
    # the mapper is a tokens mapper by now (an experiment above), yet the set's columns stay these
    assert {key: report[key] for key in numbers} == numbers
    assert sorted(report["folds"]) == [f"fold{i}" for i in range(1, 6)]
    assert all(fold["pairs"] == 4 for fold in report["folds"].values()) and report["pairs"] == 20
    assert report["chance_top1"] == 1 / 4 and 0 <= report["top1_fold_mean"] <= 1


def test_an_eval_set_runs_without_t5_through_the_pipeline_functions(workspace, esc50_copy, tmp_path):
    # The eval set calls the main stages' own functions: with diffusion.use_t5 false its text features are made
    # exactly as embed_text makes them (CLIP only, T5's part zeros), in diffusion.dtype, on diffusion.device.
    from a2i_core.core.params import load_params
    from a2i_core.diffusion.prompt_embeddings import load_guidance
    from a2i_core.pipeline.eval_set import eval_set

    ws, _ = workspace
    raw = YAML(typ="safe", pure=True).load((ws / "params.yaml").read_text())
    raw["diffusion"]["use_t5"] = False
    raw["eval_sets"] = {"esc": {"source": "esc50", "esc50": {"root": str(esc50_copy)}}}
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    params = load_params(tmp_path / "params.yaml")
    report = eval_set(params, "esc", ws / "models/mapper", ws / "models/audio_encoder", ws / "models/sd3",
                      ws / "models/clip", tmp_path / "out", tmp_path / "esc.json", tmp_path / "esc_report.json",
                      tmp_path / "esc_table.md", ws / "data/candidates.parquet")
    assert report["pairs"] == 20 and report["leak"] is None  # ESC-50's recordings are not videos
    assert "images" not in report and "images_per_class: 0" in (tmp_path / "esc_table.md").read_text()
    assert json.loads((tmp_path / "esc_report.json").read_text()) == report
    assert json.loads((tmp_path / "esc.json").read_text())["eval_sets"]["esc"]["top1"] == report["top1"]
    text = tmp_path / "out" / "features" / "text"
    assert shards.table_metadata(shards.shard_paths(text)[0])["t5"] == "false"
    _, sequence = load_guidance(text)
    assert sequence.shape == (77 + 32, 32) and not sequence[77:].any()  # T5's part: zeros, never loaded


def _readme_commands(prefix: str) -> list[list[str]]:
    """The manual's commands that start with ``prefix``, as it prints them (comments cut), split like a shell."""
    return [shlex.split(line) for line in manual_commands(prefix)]


def test_experiments_compare_on_the_numbers_that_matter(workspace):
    # After the experiments above (eval sets too): the README's commands compare them on a table a terminal can
    # show.
    ws, _ = workspace
    names = _dvc(ws, "exp", "list", "--name-only").split()
    assert len(names) >= 2
    (show,) = _readme_commands("dvc exp show --only-changed")
    header = next(csv.reader(io.StringIO(_dvc(ws, *show[1:], "--csv"))))
    # CSV's bookkeeping columns, the params that differ, every top-1 (kept) and the timeline's five headline numbers
    assert len(header) <= 50, header
    assert {"top1", "mrr", "baseline_top1", "train.epochs", "eval_sets.esc50.top1", "true_prompt.aic",
            "baseline_mean.aic"} <= set(header), header  # kept even where no experiment changed them
    assert not [name for name in header if "/" in name]  # no dependency hashes, no per-file metric names
    everything = next(csv.reader(io.StringIO(_dvc(ws, "exp", "show", "--csv"))))
    assert not [name for name in everything if name.startswith(("pairs_per_label", "pairs_per_split"))]
    (diff,) = _readme_commands("dvc exp diff")
    changed = json.loads(_dvc(ws, *[names[0] if a == "EXP_A" else names[1] if a == "EXP_B" else a
                                    for a in diff[1:]], "--json"))
    assert set(changed["metrics"]) <= {"metrics/eval.json", "metrics/image_eval.json", "metrics/eval_sets/esc50.json",
                                       "metrics/timeline.json", "metrics/label_head.json", "metrics/mixtures.json"}
    (plots,) = _readme_commands("dvc plots diff")
    compared = json.loads(_dvc(ws, *[names[0] if a == "EXP_A" else names[1] if a == "EXP_B" else a
                                     for a in plots[1:]], "--json"))
    assert not compared.get("errors")
    for chart in STATIC_CHARTS:  # each revision's chart once
        assert sorted(e["revisions"][0] for e in compared["data"][chart]) == sorted(names[:2])
    assert {rev for entry in compared["data"]["Training curves"] for rev in entry["revisions"]} >= set(names[:2])
