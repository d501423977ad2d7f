"""The benchmark scripts run at tiny sizes on CPU (their full runs are recorded in benchmarks/RESULTS.md).

render, embed_audio and generate run through benchmarks/gpu.sh, the script a GPU machine runs, in its CPU mode.
"""

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gpu_script_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "A2I_GPU_SMOKE": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(out)], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "torch" in (out / "machine.txt").read_text()
    return {name: (out / f"{name}.md").read_text() for name in ("render", "embed_audio", "generate")}


def _run(script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_embed_audio_benchmark_agrees_with_the_reference(gpu_script_tables):
    out = gpu_script_tables["embed_audio"]
    assert "(a) torchvggish reference" in out and "(b) a2i embed_audio" in out
    max_16k = float(re.search(r"\| 16 kHz input \(same samples\) \| \d+ \| ([0-9.e+-]+) \|", out).group(1))
    assert max_16k < 1e-3
    assert re.search(r"\| ratio 8 / 4 \| [0-9.]+ \|", out)


def test_embed_text_benchmark_counts_one_call_per_unique_prompt():
    out = _run("embed_text.py")
    rows = re.findall(r"^\| (\d+) \| 60 \| 21 \| (\d+) \|", out, flags=re.M)
    assert rows and all(calls == "21" for _, calls in rows)


def _render_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_benchmark", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_benchmark_runs_tiny(gpu_script_tables):
    out = gpu_script_tables["render"]
    speed = {}
    for label in ("(a) stock pipeline call, eager", "(b) a2i render, eager", "(b) a2i render + compile"):
        row = re.search(rf"^\| {re.escape(label)} \| float32 \| (\d) \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+)x \|", out, re.M)
        assert row, label
        speed[label] = float(row.group(2))
    assert speed["(a) stock pipeline call, eager"] == 1.0


def test_render_benchmark_gpu_helpers_run_at_small_sizes():
    # The GEMM ceiling and the attention table run only on a GPU in the real benchmark: check them small on CPU.
    module = _render_benchmark()
    assert module.gemm_tflops(torch.device("cpu"), n=128, repeats=2) > 0
    rows = module.attention_table(torch.device("cpu"), batch=1, image_tokens=16)
    assert len(rows) == 3 + 4 and re.match(r"\| default choice \| [0-9.]+ \| \d+ \|", rows[3])
    assert module.spec_peak("NVIDIA H100 PCIe") == 756.0 and module.spec_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert module.spec_peak("NVIDIA H200") == 989.4 and module.spec_peak("Tesla T4") is None


def test_render_benchmark_builds_sd3_medium_architecture():
    # On the meta device: shapes without memory, so the GPU build is checked here too.
    pipe = _render_benchmark().sd3_medium_on(torch.device("meta"), torch.float16)
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9
             for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")}
    assert 2.0 < count["transformer"] < 2.1  # SD3 Medium's MMDiT: 2.03 B
    assert 4.7 < count["text_encoder_3"] < 4.8  # T5-XXL encoder
    assert 0.69 < count["text_encoder_2"] < 0.70 and 0.12 < count["text_encoder"] < 0.13
    assert pipe.vae_scale_factor == 8 and 0.08 < count["vae"] < 0.09


def test_generate_latency_benchmark_assembles_the_sd3_medium_path(gpu_script_tables):
    # The path of `--sd3-medium`, with the tiny SD3 in place of SD3 Medium's architecture.
    assert "tiny SD3, random weights" in gpu_script_tables["generate"]
    assert re.search(r"^\| \*\*total\*\* \| [0-9.]+ \|$", gpu_script_tables["generate"], flags=re.M)


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


def test_long_audio_benchmark_streams_in_bounded_memory():
    output = _run("long_audio.py")
    assert re.search(r"^streamed ratio [0-9.]+ / [0-9.]+ min: [0-9.]+ \(limit 1\.2\): bounded$", output, re.M)


def test_tfrecord_memory_benchmark_stays_within_its_bound():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tfrecord_memory.py"), "--tiny"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 of 6 cases within the bound" in result.stdout


def test_timeline_memory_benchmark_measures_each_part_of_a_timeline():
    output = _run("timeline_memory.py")
    for part in ("make_timeline: all of it", "hear: decode + VGGish, streamed", "storyboard sheet",
                 "film: render + save frames", "film: MP4 encode (frames to ffmpeg)"):
        assert re.search(rf"^\| {re.escape(part)} \| -?[0-9.]+ \| -?[0-9.]+ \| [+-][0-9.]+ \| (-?[0-9.]+|nan) \|",
                         output, re.M), part
    frames = dict(re.findall(r"^\| (1 min|2 min) \| [0-9.]+ \| \d+ \(\d+\) \| (\d+) \|", output, re.M))
    assert frames == {"1 min": "60", "2 min": "120"}  # 1 frame/s
    assert re.search(r"^process peak ratio 2 min / 1 min: [0-9.]+ \(limit 1\.2\): bounded;", output, re.M)
