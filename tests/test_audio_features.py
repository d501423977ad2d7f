import numpy as np
import torch

from a2i_core import shards
from a2i_core.audio import write_wav
from a2i_core.audio_features import AUDIO_KIND, embed_clips, embed_waves, load_audio_embeddings
from a2i_core.encoders import load_audio_encoder
from a2i_core.vggish import LogMelFrontend


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
    stats = embed_clips(encoder, clips, out, batch_size=3, shard_rows=2, device=torch.device("cpu"),
                        metadata={"postprocess": "false"})
    assert stats["clips"] == 4 and stats["skipped"] == 1
    table = shards.read_shards(out, AUDIO_KIND)
    assert table["n_frames"].to_pylist() == [1, 1, 2, 3]  # the 0.4 s clip is padded, never dropped
    frames = [np.array(f, np.float32) for f in table["frames"].to_pylist()]
    ids, means, meta = load_audio_embeddings(out)
    assert ids == ["clip0", "clip1", "clip2", "clip3"] and meta["postprocess"] == "false"
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
