"""End to end: the real `dvc repro` on the offline profile in a temporary git repository, through `a2i demo`."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from ruamel.yaml import YAML

from a2i_core import shards
from a2i_core.audio_features import load_audio_embeddings
from a2i_core.candidates import CANDIDATES_KIND
from a2i_core.manifest import load_manifest
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.text import load_guidance, load_text_features
from a2i_core.workspace import tool_env
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
PROTECTED = ("params.yaml", "dvc.yaml", "dvc.lock")
PROTECTED_DIGESTS = {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() if (ROOT / name).exists()
                     else None for name in PROTECTED}  # taken at import, before any fixture runs the demo
STAGES = ["check_params", "ingest", "download", "encoders", "embed_audio", "embed_text", "train", "evaluate",
          "render", "image_eval"]
ROWS = ["baseline_mean", "mapper", "mapper_fill_zeros", "true_prompt"]


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def _dvc(workspace: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workspace, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workspace(demo_workspace) -> tuple[Path, str]:
    # The demo must leave the project's own params.yaml, dvc.yaml and dvc.lock alone.
    assert {name: _digest(ROOT / name) for name in PROTECTED} == PROTECTED_DIGESTS
    return demo_workspace


def test_every_stage_ran_and_wrote_valid_outputs(workspace):
    ws, output = workspace
    assert _ran(output) == STAGES
    candidates = shards.read_table(ws / "data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    assert len(candidates) == 80 and set(candidates["split"]) == {"train", "val", "test"}
    manifest = load_manifest(ws / "data/audio")
    assert (manifest["status"] == "ok").all() and len(manifest) == 80
    ids, audio, meta = load_audio_embeddings(ws / "data/features/audio")
    assert sorted(ids) == sorted(candidates["clip_id"]) and audio.shape == (80, 128) and np.isfinite(audio).all()
    prompts, pooled = load_text_features(ws / "data/features/text")
    assert sorted(prompts) == sorted(candidates["prompt"].unique()) and pooled.shape == (8, 64)
    assert load_guidance(ws / "data/features/text")[1].shape == (77 + 32, 32)
    mapper = AudioToSD3Mapper.from_pretrained(ws / "models/mapper")
    assert mapper.config.out_dim == 64 and mapper.config.provenance.postprocess is False

    eval_metrics = json.loads((ws / "metrics/eval.json").read_text())
    assert eval_metrics["chance_top1"] == 1 / 8 and 0 <= eval_metrics["top1"] <= 1
    assert eval_metrics["top1"] > eval_metrics["baseline_mean"]["top1"]
    render = json.loads((ws / "metrics/render.json").read_text())
    n_clips = candidates.query("split == 'test'")["label"].nunique()
    assert sorted(p.name for p in (ws / "metrics/images").iterdir()) == ROWS
    images = sorted((ws / "metrics/images").glob("*/*.png"))
    assert render["images"] == len(images) == len(ROWS) * n_clips and render["true_prompt_sequence"] == "full"
    for path in images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (64, 64)
    with Image.open(ws / "metrics/contact_sheet.png") as sheet:
        assert sheet.height > 128 * n_clips
    image_eval = json.loads((ws / "metrics/image_eval.json").read_text())
    assert set(ROWS) <= set(image_eval) and image_eval["mapper"]["images"] == n_clips
    assert all(0 <= image_eval[row]["zero_shot_top1"] <= 1 for row in ROWS)
    curve = (ws / "metrics/train/plots/metrics/val_loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "val_loss"] and len(curve) > 5


def test_second_repro_does_nothing(workspace):
    ws, _ = workspace
    output = _dvc(ws, "repro")
    assert _ran(output) == [] and "Data and pipelines are up to date" in output
    assert "modified" not in _dvc(ws, "status")


def test_metrics_are_listed(workspace):
    ws, _ = workspace
    shown = _dvc(ws, "metrics", "show", "--json")
    assert '"top1"' in shown and '"best_epoch"' in shown


def test_experiment_reruns_only_train_and_after(workspace):
    ws, _ = workspace
    output = _dvc(ws, "exp", "run", "-S", "train.epochs=3")
    assert _ran(output) == ["check_params", "train", "evaluate", "render", "image_eval"]
    assert json.loads((ws / "metrics/train.json").read_text())["stopped_epoch"] <= 3
    rows = json.loads(_dvc(ws, "exp", "show", "--json"))
    experiments = [exp["revs"][0]["data"] for row in rows for exp in (row.get("experiments") or [])]
    ours = [e for e in experiments if e["params"]["params.yaml"]["data"]["train"]["epochs"] == 3]
    assert ours and "top1" in ours[0]["metrics"]["metrics/eval.json"]["data"]


def test_plots_show_curves_classes_images_and_sheet(workspace):
    ws, _ = workspace
    shown = json.loads(_dvc(ws, "plots", "show", "--json"))
    assert not shown.get("errors")
    plots = shown["data"]
    assert plots["Training curves"] and plots["Per-class retrieval (top-1)"]
    assert "metrics/contact_sheet.png" in plots and any(name.startswith("metrics/images/mapper/") for name in plots)


def test_variants_run_as_experiments(workspace):
    ws, _ = workspace
    _dvc(ws, "exp", "run", "-S", "mapper.target=pooled+tokens", "-S", "mapper.input=frames",
         "-S", "render.sequence_fill=zeros", "-S", "data.heldout_classes=[dog]")
    evaluation = json.loads((ws / "metrics/eval.json").read_text())
    assert "tokens_cosine" in evaluation and evaluation["heldout"]["pairs"] == 10
    assert "dog" not in pd.read_csv(ws / "metrics/eval_per_class.csv").query("split == 'test'")["label"].tolist()
    config = AudioToSD3Mapper.from_pretrained(ws / "models/mapper").config
    assert config.input == "frames" and config.tokens == 20
    assert json.loads((ws / "metrics/render.json").read_text())["sequence_fill"] == "zeros"


@pytest.fixture(scope="module")
def esc50_copy(tmp_path_factory) -> Path:
    """A small ESC-50 copy in the official layout: 4 categories x 5 folds, sounds made by the synthetic classes."""
    from a2i_core.audio import write_wav
    from a2i_core.sources.synthetic import clip_specs, synthesize

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
    assert _ran(output) == ["check_params", "eval_set@esc50"]
    report = json.loads((ws / "metrics/eval_sets/esc50.json").read_text())
    assert sorted(report["folds"]) == [f"fold{i}" for i in range(1, 6)]
    assert all(fold["pairs"] == 4 for fold in report["folds"].values()) and report["pairs"] == 20
    assert report["chance_top1"] == 1 / 4 and 0 <= report["top1_fold_mean"] <= 1


def test_an_eval_set_runs_without_t5_through_the_pipeline_functions(workspace, esc50_copy, tmp_path):
    # The eval set calls the main stages' own functions: with diffusion.use_t5 false its text features are made
    # exactly as embed_text makes them (CLIP only, T5's part zeros), in diffusion.dtype, on diffusion.device.
    from a2i_core.params import load_params
    from a2i_core.pipeline.eval_set import eval_set
    from a2i_core.text import load_guidance

    ws, _ = workspace
    raw = YAML(typ="safe", pure=True).load((ws / "params.yaml").read_text())
    raw["diffusion"]["use_t5"] = False
    raw["eval_sets"] = {"esc": {"source": "esc50", "esc50": {"root": str(esc50_copy)}}}
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    params = load_params(tmp_path / "params.yaml")
    report = eval_set(params, "esc", ws / "models/mapper", ws / "models/vggish", ws / "models/sd3", tmp_path / "out",
                      tmp_path / "esc.json")
    assert report["pairs"] == 20 and json.loads((tmp_path / "esc.json").read_text()) == report
    text = tmp_path / "out" / "features" / "text"
    assert shards.table_metadata(shards.shard_paths(text)[0])["t5"] == "false"
    _, sequence = load_guidance(text)
    assert sequence.shape == (77 + 32, 32) and not sequence[77:].any()  # T5's part: zeros, never loaded
