import dataclasses

import numpy as np
import pytest
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import AUDIO_KIND, embed_clips, embed_waves, load_audio_embeddings
from a2i_core.audio.vggish import LogMelFrontend
from a2i_core.core import shards
from a2i_core.core.audio_io import write_wav


def test_clips_are_embedded_per_frame_and_mean_pooled(tmp_path, tiny_vggish_dir):
    rng = np.random.default_rng(0)
    clips = []
    for i, seconds in enumerate([0.4, 1.0, 2.5, 3.2]):
        path = tmp_path / f"clip{i}.wav"
        write_wav(path, (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32))
        clips.append((f"clip{i}", path))
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    clips.append(("broken", tmp_path / "broken.wav"))

    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    out = tmp_path / "features"
    stats = embed_clips(encoder, clips, out, batch_size=3, shard_rows=2, device=torch.device("cpu"))
    assert stats["clips"] == 4 and stats["skipped"] == 1
    table = shards.read_shards(out, AUDIO_KIND)
    assert table["n_frames"].to_pylist() == [1, 1, 2, 3]  # the 0.4 s clip is padded, never dropped
    frames = [np.array(f, np.float32) for f in table["frames"].to_pylist()]
    ids, means, meta = load_audio_embeddings(out)
    assert ids == ["clip0", "clip1", "clip2", "clip3"] and meta == encoder.provenance()
    assert meta["postprocess"] is False and meta["encoder_sha256"] == encoder.weights_sha256
    assert np.allclose(means, np.stack([f.mean(0) for f in frames]), atol=1e-6)
    assert np.isfinite(means).all()


def test_batching_across_clips_does_not_change_results(tiny_vggish_dir):
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=True)
    waves = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1
             for i, n in enumerate([20000, 16000, 40000])]
    frontend = LogMelFrontend()
    together = embed_waves(encoder, frontend, waves, batch_size=8, device=torch.device("cpu"))
    alone = [embed_waves(encoder, frontend, [w], batch_size=1, device=torch.device("cpu"))[0] for w in waves]
    for a, b in zip(together, alone, strict=True):
        assert np.allclose(a, b, atol=1e-3)  # quantised values: identical up to rounding ties


def _clips(tmp_path, n: int, seconds: float):
    rng = np.random.default_rng(1)
    clips = []
    for i in range(n):
        path = tmp_path / "audio" / f"c{i:02d}.wav"
        write_wav(path, (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32))
        clips.append((f"c{i:02d}", path))
    return clips


def test_rerun_keeps_finished_shards_and_recomputes_changed_ones(tmp_path, tiny_vggish_dir, monkeypatch):
    from a2i_core.audio import features
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    clips = _clips(tmp_path, 6, 1.0)
    out, cpu = tmp_path / "features", torch.device("cpu")
    calls = []
    original = features.embed_waves

    def interrupt_on_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(features, "embed_waves", interrupt_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        embed_clips(encoder, clips, out, batch_size=2, shard_rows=2, device=cpu)
    assert [p.name for p in shards.shard_paths(out)] == ["part-00000.parquet"]
    monkeypatch.setattr(features, "embed_waves", original)
    assert embed_clips(encoder, clips, out, 2, 2, cpu)["shards_kept"] == 1
    assert embed_clips(encoder, clips, out, 2, 2, cpu)["clips"] == 0  # all kept
    write_wav(clips[3][1], np.zeros(16000, np.float32) + 0.01)
    stats = embed_clips(encoder, clips, out, 2, 2, cpu)
    assert stats["shards_kept"] == 2 and stats["clips"] == 2  # only the changed clip's shard
    other = load_audio_encoder(tiny_vggish_dir, postprocess=True)  # another provenance: other features
    assert embed_clips(other, clips, out, 2, 2, cpu)["shards_kept"] == 0
    embed_clips(encoder, clips[:3], out, 2, 2, cpu)
    assert len(shards.shard_paths(out)) == 2  # shards beyond the plan are removed


def test_a_killed_run_resumes_with_only_unfinished_shards(tmp_path, tiny_vggish_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    clips = _clips(tmp_path, 8, 8.0)
    out = tmp_path / "features"
    script = (
        "import sys, torch; from pathlib import Path\n"
        "from a2i_core.audio.features import embed_clips\n"
        "from a2i_core.audio.encoder import load_audio_encoder\n"
        f"enc = load_audio_encoder({str(tiny_vggish_dir)!r}, postprocess=False)\n"
        f"clips = [(p.stem, p) for p in sorted(Path({str(tmp_path / 'audio')!r}).glob('*.wav'))]\n"
        f"embed_clips(enc, clips, {str(out)!r}, 2, 2, torch.device('cpu'))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "part-00001.parquet").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(shards.shard_paths(out))
    assert 2 <= finished < 4, "the run should have been killed midway"
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    stats = embed_clips(encoder, clips, out, 2, 2, torch.device("cpu"))
    assert stats["shards_kept"] == finished and stats["clips"] == 8 - 2 * finished
    assert not list(out.glob(".*tmp")) and len(shards.shard_paths(out)) == 4


def test_packed_and_file_clips_give_the_same_embeddings(tmp_path, tiny_vggish_dir, raw_params):
    from a2i_core.core.manifest import clip_sources
    from a2i_core.core.params import params_from_dict
    from a2i_core.data.download import download_clips
    from a2i_core.data.ingest import build_candidates
    from tests.conftest import offline

    raw_params["data"]["synthetic"].update(classes=["siren", "rain"], clips_per_class=3, max_seconds=1.5)
    candidates, _ = build_candidates(params_from_dict(raw_params).data)
    cfg = offline("download", workers=1, requests_per_second=0)
    download_clips(candidates, tmp_path / "files", cfg)
    download_clips(candidates, tmp_path / "packed", dataclasses.replace(cfg, pack_size=4))
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    for name in ("files", "packed"):
        embed_clips(encoder, clip_sources(tmp_path / name), tmp_path / f"emb-{name}", 4, 4, torch.device("cpu"))
    ids_f, emb_f, _ = load_audio_embeddings(tmp_path / "emb-files")
    ids_p, emb_p, _ = load_audio_embeddings(tmp_path / "emb-packed")
    order = [ids_p.index(i) for i in ids_f]
    assert sorted(ids_f) == sorted(ids_p) and np.allclose(emb_f, emb_p[order], atol=1e-6)
