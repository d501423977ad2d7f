"""README's "Train on your own sounds", run as written: a folder of labelled recordings -> `a2i demo` with an overlay
(the real `dvc repro`) -> `a2i generate` with the mapper it trained."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from a2i_core.core.audio_io import ffmpeg_binary, write_wav
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.offline.workspace import tool_env
from tests.helpers import manual_section

pytestmark = pytest.mark.e2e
SOUNDS = {"dog": "dog", "church_bell": "bell", "rain": "rain"}  # folder label -> the synthetic class it sounds like


def readme_commands() -> str:
    """The bash block of the manual's section, exactly as a reader copies it."""
    return re.search(r"```bash\n(.*?)```", manual_section("### Train on your own sounds"), re.S).group(1)


def test_the_readme_steps_train_on_a_folder_and_generate(tmp_path):
    for label, synth in SOUNDS.items():
        (tmp_path / "my_sounds" / label).mkdir(parents=True)
        for i, spec in enumerate(clip_specs([synth], 8, 1.0, 2.0, seed=3).values()):
            write_wav(tmp_path / "my_sounds" / label / f"take{i}.wav", synthesize(spec))
    # One recording as MP3, as a user's would be: any format ffmpeg reads.
    mp3 = tmp_path / "my_sounds" / "dog" / "take0.mp3"
    subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", str(mp3.with_suffix(".wav")),
                    str(mp3)], check=True)
    mp3.with_suffix(".wav").unlink()

    result = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_commands()], cwd=tmp_path, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    data = json.loads((tmp_path / "my_workspace/metrics/data.json").read_text())
    assert data["source"] == "folder" and data["clips"] == 24
    assert sorted(data["pairs_per_label"]) == sorted(SOUNDS)
    images = sorted(p.relative_to(tmp_path / "my_images").as_posix() for p in (tmp_path / "my_images").rglob("*.png"))
    assert len(images) == 24 and "dog/take0.png" in images
    evaluation = json.loads((tmp_path / "my_workspace/metrics/eval.json").read_text())
    assert evaluation["top1"] > evaluation["chance_top1"]  # the mapper learnt the folder's own labels
