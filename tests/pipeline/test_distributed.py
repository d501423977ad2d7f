"""embed_audio, embed_text, both render stages and the timeline stage (its film's frames spread over the processes)
give identical outputs with 2 torchrun processes (gloo, CPU) and with 1."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ruamel.yaml import YAML

from a2i_core.audio.features import AUDIO_KIND
from a2i_core.core import shards
from a2i_core.diffusion.prompt_embeddings import TEXT_KIND
from a2i_core.offline.workspace import tool_env
from a2i_core.timeline.video import film_frames

pytestmark = pytest.mark.e2e
OUTPUTS = {"embed_audio": "data/features/audio", "embed_text": "data/features/text",
           "render_reference": "metrics/images_reference", "render": "metrics/images", "timeline": "metrics/timelines"}


def _run(ws: Path, stage: str, processes: int) -> None:
    shutil.rmtree(ws / OUTPUTS[stage], ignore_errors=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    # The stage's own command line from dvc.yaml, with this launcher in place of ${launch}.
    args = shlex.split(YAML(typ="safe", pure=True).load((ws / "dvc.yaml").read_text())["stages"][stage]["cmd"])
    assert args[0] == "${launch}"
    cmd = (launcher if processes > 1 else [sys.executable]) + args[1:]
    # The same threads per process as the demo's single-process run: thread counts, not process counts, may
    # change float summation order in the CPU kernels.
    env = {**tool_env(), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def _tables(directory: Path, kind: str) -> list:
    return [shards.read_table(p, kind) for p in shards.shard_paths(directory)]


def test_two_processes_give_the_same_outputs_as_one(demo_workspace, tmp_path):
    # The demo ran these stages in one process (its profile cuts the work into several shards and batches).
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], ws, ignore=shutil.ignore_patterns(".dvc", ".git"))
    single = {}
    for stage in OUTPUTS:
        single[stage] = tmp_path / f"single-{stage}"
        shutil.copytree(demo_workspace[0] / OUTPUTS[stage], single[stage])
    for stage in OUTPUTS:
        _run(ws, stage, 2)

    audio_1, audio_2 = _tables(single["embed_audio"], AUDIO_KIND), _tables(ws / OUTPUTS["embed_audio"], AUDIO_KIND)
    assert len(audio_1) == len(audio_2) >= 4
    assert all(a.equals(b) and a.schema.metadata == b.schema.metadata for a, b in zip(audio_1, audio_2, strict=True))
    text_1, text_2 = _tables(single["embed_text"], TEXT_KIND), _tables(ws / OUTPUTS["embed_text"], TEXT_KIND)
    assert len(text_1) == len(text_2) >= 3 and all(a.equals(b) for a, b in zip(text_1, text_2, strict=True))
    assert (single["embed_text"] / "guidance.parquet").read_bytes() == \
        (ws / OUTPUTS["embed_text"] / "guidance.parquet").read_bytes()
    for stage in ("render_reference", "render"):
        images_1 = sorted(str(p.relative_to(single[stage])) for p in single[stage].glob("*/*.png"))
        images_2 = sorted(str(p.relative_to(ws / OUTPUTS[stage])) for p in (ws / OUTPUTS[stage]).glob("*/*.png"))
        assert images_1 == images_2 and len(images_1) >= 4
        for name in images_1:
            with Image.open(single[stage] / name) as a, Image.open(ws / OUTPUTS[stage] / name) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), name
    timelines_1, timelines_2 = single["timeline"], ws / OUTPUTS["timeline"]
    files = sorted(str(p.relative_to(timelines_1)) for p in timelines_1.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(timelines_2)) for p in timelines_2.rglob("*") if p.is_file())
    films = [name for name in files if name.endswith(".mp4")]
    assert films
    for name in films:  # the same frames, whichever process drew them (x264 encodes the same frames the same)
        assert np.array_equal(_all_frames(timelines_1 / name), _all_frames(timelines_2 / name)), name
    for name in (n for n in files if n.endswith((".png", ".csv", ".vtt"))):
        assert (timelines_1 / name).read_bytes() == (timelines_2 / name).read_bytes(), name


def _all_frames(path: Path) -> np.ndarray:
    return np.stack(list(film_frames(path)))
