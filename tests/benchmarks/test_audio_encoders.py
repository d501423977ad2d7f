"""benchmarks/audio_encoders.py at tiny sizes on CPU (its full run is recorded in benchmarks/RESULTS.md)."""

import re
import subprocess
import sys

from a2i_core.offline.workspace import tool_env
from tests.conftest import ROOT


def test_audio_encoders_benchmark_measures_each_encoder():
    script = ROOT / "benchmarks" / "audio_encoders.py"
    result = subprocess.run([sys.executable, str(script), "--tiny", "--device", "cpu"], capture_output=True, text=True,
                            cwd=ROOT, env=tool_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| (vggish|clap|ast) \| (\d+) \| [0-9.]+ \| (\d+) \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \| [0-9.]+ \| (\d+) \|",
        result.stdout, flags=re.M)}
    assert set(rows) == {"vggish", "clap", "ast"}, result.stdout
    for dim, windows, clips_per_s, peak in rows.values():
        assert int(dim) > 0 and int(windows) >= 3 and float(clips_per_s) > 0 and int(peak) > 0
