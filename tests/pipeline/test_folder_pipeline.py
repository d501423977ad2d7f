"""A folder of recordings in mixed formats, rates and lengths goes through ingest -> embed_audio (real DVC)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from ruamel.yaml import YAML

from a2i_core.audio.features import load_audio_embeddings
from a2i_core.core.audio_io import ffmpeg_binary
from a2i_core.core.manifest import load_manifest
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.offline.workspace import prepare, tool_env
from tests.conftest import OFFLINE_PROFILE

pytestmark = pytest.mark.e2e
FILES = [("dog/a.mp3", 44100, 2, 0.4), ("dog/b.ogg", 22050, 1, 3.0), ("bell/c.flac", 48000, 2, 12.0),
         ("bell/d.wav", 8000, 1, 1.5), ("rain/e.m4a", 32000, 1, 2.0)]


def _record(path: Path, spec, rate: int, channels: int, seconds: float, scratch: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(scratch, np.resize(synthesize(spec), int(seconds * 16000)), 16000)
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-i", str(scratch), "-ar", str(rate), "-ac",
                    str(channels), str(path)], check=True)


def _repro(ws: Path) -> list[str]:
    """`dvc repro embed_audio`: the stages it ran."""
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "embed_audio"], cwd=ws, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return re.findall(r"Running stage '([^']+)'", result.stdout)


def test_mixed_folder_to_embeddings(tmp_path):
    root = tmp_path / "recordings"
    specs = list(clip_specs(["dog"], len(FILES) + 2, 1.0, 1.0, 5).values())
    for (rel, rate, channels, seconds), spec in zip(FILES, specs, strict=False):
        _record(root / rel, spec, rate, channels, seconds, tmp_path / "src.wav")
    (root / "rain" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    profile = YAML(typ="safe", pure=True).load(OFFLINE_PROFILE.read_text())
    profile["data"].update(source="folder", folder={"root": str(root), "labels_csv": None})
    del profile["data"]["synthetic"]
    with open(tmp_path / "profile.yaml", "w") as f:
        YAML().dump(profile, f)
    ws = prepare(tmp_path / "ws", [tmp_path / "profile.yaml"])
    assert "embed_audio" in _repro(ws)

    manifest = load_manifest(ws / "data/audio").set_index("clip_id")
    assert (manifest["status"] == "ok").sum() == len(FILES)
    broken = manifest[manifest["status"] != "ok"]
    assert len(broken) == 1 and broken["status"].iloc[0] == "decode" and "cannot decode" in broken["reason"].iloc[0]
    ids, embeddings, _ = load_audio_embeddings(ws / "data/features/audio")
    assert sorted(ids) == sorted(manifest.index[manifest["status"] == "ok"])
    assert embeddings.shape == (len(FILES), 128) and np.isfinite(embeddings).all()

    # Your own data reruns (before: params named the folder, not its files, so each of these was "up to date").
    assert _repro(ws) == ["sources"]  # the files did not change: nothing after the fingerprint runs
    before = dict(zip(*load_audio_embeddings(ws / "data/features/audio")[:2], strict=True))

    _record(root / "dog/b.ogg", specs[-1], 22050, 1, 3.0, tmp_path / "src.wav")  # replaced under the same name
    assert _repro(ws) == ["sources", "ingest", "download", "embed_audio"]
    after = dict(zip(*load_audio_embeddings(ws / "data/features/audio")[:2], strict=True))
    changed = {c for c in before if not np.array_equal(before[c], after[c])}
    assert len(changed) == 1 and "b" in next(iter(changed)), changed

    _record(root / "rain/f.wav", specs[-2], 16000, 1, 1.0, tmp_path / "src.wav")  # added
    (root / "bell/d.wav").unlink()  # removed
    assert _repro(ws) == ["sources", "ingest", "download", "embed_audio"]
    manifest = load_manifest(ws / "data/audio").set_index("clip_id")
    ids = set(load_audio_embeddings(ws / "data/features/audio")[0])
    assert ids == set(manifest.index[manifest["status"] == "ok"]) and len(ids) == len(FILES)
    assert any("f_wav" in c for c in ids) and not any("d_wav" in c for c in ids), ids
