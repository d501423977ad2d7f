"""The benchmark scripts run at tiny sizes on CPU (their full runs are recorded in benchmarks/RESULTS.md)."""

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def _run(script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_embed_audio_benchmark_agrees_with_the_reference():
    out = _run("embed_audio.py")
    assert "(a) torchvggish reference" in out and "(b) a2i embed_audio" in out
    max_16k = float(re.search(r"\| 16 kHz input \(same samples\) \| \d+ \| ([0-9.e+-]+) \|", out).group(1))
    assert max_16k < 1e-3
    assert re.search(r"\| ratio 8 / 4 \| [0-9.]+ \|", out)


def test_embed_text_benchmark_counts_one_call_per_unique_prompt():
    out = _run("embed_text.py")
    rows = re.findall(r"^\| (\d+) \| 60 \| 21 \| (\d+) \|", out, flags=re.M)
    assert rows and all(calls == "21" for _, calls in rows)


def test_render_benchmark_runs_tiny():
    out = _run("render.py")
    assert re.search(r"\| \(a\) stock pipeline call, eager \| float32 \| 1 \|", out)
    assert re.search(r"\| \(b\) a2i render \| float32 \| 2 \|", out)


def test_render_benchmark_builds_sd3_medium_architecture():
    # On the meta device: shapes without memory, so the GPU build is checked here too.
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_benchmark", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe = module.sd3_medium_on(torch.device("meta"), torch.float16)
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9
             for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")}
    assert 2.0 < count["transformer"] < 2.1  # SD3 Medium's MMDiT: 2.03 B
    assert 4.7 < count["text_encoder_3"] < 4.8  # T5-XXL encoder
    assert 0.69 < count["text_encoder_2"] < 0.70 and 0.12 < count["text_encoder"] < 0.13
    assert pipe.vae_scale_factor == 8 and 0.08 < count["vae"] < 0.09


def test_generate_latency_benchmark_on_the_demo_mapper(demo_workspace):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--project",
                             str(demo_workspace[0]), "--device", "cpu", "--repeats", "1"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("decode", "embed", "map", "render", "**total**"):
        assert re.search(rf"^\| {re.escape(step)} \| [0-9.]+ \|$", result.stdout, flags=re.M), step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_embed_audio_on_the_gpu_agrees_with_the_reference():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "embed_audio.py"), "--tiny", "--device",
                             "cuda"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    max_16k = float(re.search(r"\| 16 kHz input \(same samples\) \| \d+ \| ([0-9.e+-]+) \|", result.stdout).group(1))
    assert max_16k < 1e-3
