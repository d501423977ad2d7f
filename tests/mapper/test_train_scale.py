"""Training at millions of pairs: targets are indexed by prompt and features by clip, never copied per pair, and the
batches gathered by index are exactly the rows the old per-pair arrays held."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from a2i_core.audio.features import AUDIO_KIND
from a2i_core.core import shards
from a2i_core.mapper import train
from a2i_core.mapper.model import pad_frames
from a2i_core.mapper.pairs import ClipFrames, Pairs, join_pairs, load_frames
from a2i_core.mapper.train import Split, mapper_config, train_mapper
from tests.conftest import offline
from tests.mapper.test_model import PROVENANCE

CPU = torch.device("cpu")
# (train_loss, val_loss) per epoch of test_training_from_the_index_is_training_on_per_pair_rows, from the training
# loop as it was before pairs were indexed (a2i_core/mapper/train.py at 7452ed3, with its Tensors), on the same data.
BEFORE_INDEXING = {
    "mean": [(1.7934658105556782, 1.7304668426513672), (1.7088244572663918, 1.653739094734192),
             (1.6439114949642084, 1.5795978307724)],
    "frames": [(1.6545090895432693, 1.533408761024475), (1.5269841365325145, 1.4150502681732178),
               (1.4259669316120638, 1.3164652585983276)],
}


def _pairs(n_pairs: int, n_clips: int, n_prompts: int, seed: int = 0, max_frames: int = 6) -> Pairs:
    """``n_pairs`` pairs over a few clips and prompts: pooled (K, 8) float32, tokens (K, 3, 4) float16, and ragged
    frames of 1 to 9 per clip cut at ``max_frames``."""
    rng = np.random.default_rng(seed)
    clip_ids, prompts = [f"clip{i}" for i in range(n_clips)], [f"a photo of {i}" for i in range(n_prompts)]
    candidates = pd.DataFrame({"clip_id": rng.choice(clip_ids, n_pairs), "label": "l",
                               "prompt": rng.choice(prompts, n_pairs), "split": rng.choice(["train", "val"], n_pairs)})
    frame, clip_row, prompt_row = join_pairs(candidates, clip_ids, prompts)
    lengths = np.minimum(rng.integers(1, 10, n_clips), max_frames)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Pairs(frame=frame, clip_row=clip_row, prompt_row=prompt_row,
                 clip_audio=rng.standard_normal((n_clips, 5)).astype(np.float32), prompts=prompts,
                 prompt_pooled=rng.standard_normal((n_prompts, 8)).astype(np.float32), provenance={},
                 clip_frames=ClipFrames(rng.standard_normal((offsets[-1], 5)).astype(np.float32), offsets),
                 prompt_tokens=rng.standard_normal((n_prompts, 3, 4)).astype(np.float16))


def _per_pair(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """What the old layout materialised: x (n, 128) and y (n, P + N * D) float32, a row per pair."""
    pooled = pairs.prompt_pooled[pairs.prompt_row]
    tokens = pairs.prompt_tokens[pairs.prompt_row].astype(np.float32).reshape(len(pairs.prompt_row), -1)
    return pairs.clip_audio[pairs.clip_row], np.concatenate([pooled, tokens], axis=1)


def test_many_pairs_of_few_prompts_hold_each_target_once():
    pairs = _pairs(20_000, 50, 4)
    assert pairs.prompt_pooled.nbytes == 4 * 8 * 4 and pairs.prompt_tokens.nbytes == 4 * 3 * 4 * 2
    assert pairs.clip_audio.shape == (50, 5)
    per_pair = [a for a in vars(pairs).values() if isinstance(a, np.ndarray) and len(a) == len(pairs)]
    assert {a.dtype for a in per_pair} == {np.dtype(np.int64)}  # only the two indices grow with the pairs
    part = pairs.subset("train")
    assert part.prompt_pooled is pairs.prompt_pooled and part.clip_audio is pairs.clip_audio
    data = Split.of(pairs, "mean", True, CPU)
    # On the CPU the split shares the arrays: no copy, on top of no row per pair.
    assert data.pooled.data_ptr() == pairs.prompt_pooled.ctypes.data
    assert data.tokens.data_ptr() == pairs.prompt_tokens.ctypes.data
    assert data.audio.data_ptr() == pairs.clip_audio.ctypes.data
    train_rows = data.rows(pairs.frame["split"].to_numpy() == "train")
    assert train_rows.pooled is data.pooled and len(train_rows) == len(part)


def test_batches_are_exactly_the_old_per_pair_rows():
    pairs = _pairs(300, 20, 6)
    x_old, y_old = _per_pair(pairs)
    data = Split.of(pairs, "mean", True, CPU)
    rows = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:64]
    x, mask, y = data.batch(rows)
    assert mask is None and y.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(x_old)[rows]) and torch.equal(y, torch.from_numpy(y_old)[rows])
    x, _, y = Split.of(pairs, "mean", False, CPU).batch(rows)
    assert torch.equal(y, torch.from_numpy(pairs.pooled)[rows])
    # The gathered views evaluation and rendering use are the old arrays too.
    assert np.array_equal(pairs.targets(True), y_old) and np.array_equal(pairs.audio, x_old)
    assert np.allclose(pairs.mean_pooled(), pairs.pooled.mean(0), atol=1e-6)


def test_frames_batches_are_gathered_and_padded_per_batch():
    max_frames = 6
    pairs = _pairs(200, 30, 4, max_frames=max_frames)
    old_x, old_mask = pad_frames(pairs.clip_frames.of(pairs.clip_row), max_frames)  # (n, T, 5): every pair at once
    data = Split.of(pairs, "frames", False, CPU)
    short = torch.from_numpy(np.flatnonzero(old_mask.sum(1) <= 2))
    for rows in (torch.arange(50), short[:7], torch.tensor([3])):
        x, mask, _ = data.batch(rows)  # (B, T, 5), (B, T): only this batch's rows, padded as the old array was
        assert x.shape == (len(rows), old_x.shape[1], 5)
        assert torch.equal(x, torch.from_numpy(old_x)[rows]) and torch.equal(mask, torch.from_numpy(old_mask)[rows])
    # Evaluation's gathered view pads a split to its own longest clip.
    frames, mask = pairs.take(short[:7].numpy()).inputs("frames")
    longest = int(old_mask[short[:7]].sum(1).max())
    assert longest <= 2 < old_x.shape[1] and frames.shape == (7, longest, 5)
    assert np.array_equal(frames, old_x[short[:7]][:, :longest])
    assert np.array_equal(mask, old_mask[short[:7]][:, :longest])


@pytest.mark.parametrize("kind", ["mean", "frames"])
def test_input_stats_in_parts_agree_with_all_rows_at_once(kind, monkeypatch):
    pairs = _pairs(500, 40, 3)
    data = Split.of(pairs, kind, False, CPU)
    whole = data.input_stats()
    if kind == "mean":
        x = torch.from_numpy(pairs.clip_audio[pairs.clip_row])
        assert torch.equal(whole[0], x.mean(0)) and torch.equal(whole[1], x.std(0))  # one part: torch's own numbers
    monkeypatch.setattr(train, "STATS_VALUES", 64)  # many parts, merged
    parts = data.input_stats()
    for a, b in zip(whole, parts, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def one_thread():
    """CPU kernels may split a sum differently with another thread count (a loaded machine's OpenMP can hand out
    fewer): with one thread, two runs of the same loop add in the same order and agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["mean", "frames"])
def test_training_from_the_index_is_training_on_per_pair_rows(kind, one_thread):
    pairs = _pairs(400, 40, 4)
    x, y = _per_pair(pairs)
    mask = None
    if kind == "frames":
        x, mask = pad_frames(pairs.clip_frames.of(pairs.clip_row), 6)  # (n, T, 5): the old whole-set array
    is_train = pairs.frame["split"].to_numpy() == "train"
    mapper = offline("mapper", hidden=[16], dropout=[0.1], target="pooled+tokens", input=kind, frames_width=8,
                     frames_layers=1, max_frames=6)
    config = mapper_config(mapper, 5, 8, (3, 4), PROVENANCE)
    params = offline("train", lr=1e-3, batch_size=32, epochs=3, patience=3, seed=3)
    data = Split.of(pairs, kind, True, CPU)
    a = train_mapper(data.rows(is_train), data.rows(~is_train), config, params)

    def dense(keep):
        return Split.dense(x[keep], None if mask is None else mask[keep], y[keep], CPU)

    b = train_mapper(dense(is_train), dense(~is_train), config, params)
    assert a.history == b.history
    # And the loop before pairs were indexed (a2i 7452ed3: whole splits as tensors), run once on the same data:
    # a change to the shared batch path would move both runs above together, but not this record. It was made with
    # two threads, whose float32 sums round otherwise than one thread's: over 3 epochs that moves a loss by up to
    # 2.2e-5 of itself (frames; mean 2.2e-6 on a loaded machine). 1e-4 allows that and still catches a changed batch
    # size, shuffle seed or loss, each of which moves these losses by 1.4e-2 or more (measured).
    losses = [(h["train_loss"], h["val_loss"]) for h in a.history]
    np.testing.assert_allclose(losses, BEFORE_INDEXING[kind], rtol=1e-4)
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                 strict=True))


def test_frames_are_read_by_clip_id_and_cut_at_max_frames(tmp_path):
    rng = np.random.default_rng(1)
    frames = {f"c{i}": rng.standard_normal((n, 4)).astype(np.float32) for i, n in enumerate([3, 9, 1, 5])}
    for index, ids in enumerate((["c3", "c0"], ["c2", "c1"])):  # shards in another order than the clips asked
        table = pa.table({"clip_id": ids, "n_frames": pa.array([len(frames[c]) for c in ids], pa.int32()),
                          "frames": shards.ragged_list([frames[c] for c in ids], 4)})
        shards.write_table(table, shards.shard_path(tmp_path, index), AUDIO_KIND)
    wanted = ["c0", "c1", "c2", "c3"]
    loaded = load_frames(tmp_path, wanted, max_frames=4, width=4)
    assert loaded.values.shape == (3 + 4 + 1 + 4, 4)
    for got, clip in zip(loaded.of(np.arange(4)), wanted, strict=True):
        assert np.array_equal(got, frames[clip][:4])
