"""The benchmark scripts run at tiny sizes on CPU (their full runs are recorded in benchmarks/RESULTS.md)."""

import re
import subprocess
import sys

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
