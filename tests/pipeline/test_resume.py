"""An interrupted embed_text or render resumes where it stopped, and gives what an uninterrupted run gives."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ruamel.yaml import YAML

from a2i_core.core import shards
from a2i_core.core.distributed import World
from a2i_core.core.params import load_params
from a2i_core.diffusion import prompt_embeddings
from a2i_core.diffusion.images import png_text
from a2i_core.diffusion.prompt_embeddings import GUIDANCE_FILE, TEXT_KIND, embed_prompts, encode
from a2i_core.diffusion.render import RenderSettings, plan_batches, render, render_iter
from a2i_core.diffusion.sd3 import load_sd3

CPU = torch.device("cpu")
PROMPTS = [f"an image of a {word}" for word in ("dog", "bell", "siren", "rain", "drum")]  # 6 with the empty one
EMBED = {"tokens": 3, "max_sequence_length": 8, "batch_size": 2, "shard_rows": 2, "diffusion_model": "tiny"}


@pytest.fixture(scope="module")
def text_pipe(tiny_sd3_dir):
    return load_sd3(tiny_sd3_dir, "text", CPU)


@pytest.fixture(scope="module")
def image_pipe(tiny_sd3_dir):
    return load_sd3(tiny_sd3_dir, "image", CPU)


@pytest.fixture
def encode_calls(monkeypatch) -> list[list[str]]:
    """The batches embed_prompts encodes; set ``interrupt_at`` on the list to raise KeyboardInterrupt on that call."""
    original = prompt_embeddings.encode

    class Calls(list):
        interrupt_at: int | None = None

    calls = Calls()

    def counting(pipe, prompts, *args, **kwargs):
        calls.append(list(prompts))
        if len(calls) == calls.interrupt_at:
            raise KeyboardInterrupt
        return original(pipe, prompts, *args, **kwargs)

    monkeypatch.setattr(prompt_embeddings, "encode", counting)
    return calls


def _shards(directory: Path) -> list:
    return [shards.read_table(p, TEXT_KIND) for p in shards.shard_paths(directory)]


def _same_features(a: Path, b: Path) -> bool:
    tables_a, tables_b = _shards(a), _shards(b)
    return (len(tables_a) == len(tables_b)
            and all(x.equals(y) and x.schema.metadata == y.schema.metadata
                    for x, y in zip(tables_a, tables_b, strict=True))
            and (a / GUIDANCE_FILE).read_bytes() == (b / GUIDANCE_FILE).read_bytes())


def test_embed_prompts_resumes_by_shard(tmp_path, text_pipe, encode_calls):
    clean = tmp_path / "clean"
    embed_prompts(text_pipe, PROMPTS, clean, **EMBED)
    assert len(encode_calls) == 3  # one batch per shard of 2 prompts
    encode_calls.clear()

    out = tmp_path / "out"
    encode_calls.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        embed_prompts(text_pipe, PROMPTS, out, **EMBED)
    assert [p.name for p in shards.shard_paths(out)] == ["part-00000.parquet"]
    (out / ".part-00001.parquet.x.tmp").write_bytes(b"half a shard")  # what a kill during a write leaves
    encode_calls.clear()
    encode_calls.interrupt_at = None
    stats = embed_prompts(text_pipe, PROMPTS, out, **EMBED)
    assert encode_calls == [sorted(PROMPTS)[1:3], sorted(PROMPTS)[3:5]]  # shards 1 and 2 only
    assert stats["shards_kept"] == 1 and stats["encoder_calls"] == 4 and stats["prompts"] == 6
    assert _same_features(out, clean) and not list(out.glob(".*.tmp"))

    encode_calls.clear()
    assert embed_prompts(text_pipe, PROMPTS, out, **{**EMBED, "batch_size": 5})["shards_kept"] == 3
    assert encode_calls == []  # the batch size does not change the numbers

    # The empty prompt's shard is recomputed with a missing guidance file, and only that shard.
    (out / GUIDANCE_FILE).unlink()
    embed_prompts(text_pipe, PROMPTS, out, **EMBED)
    assert encode_calls == [["", sorted(PROMPTS)[0]]] and _same_features(out, clean)

    encode_calls.clear()
    stats = embed_prompts(text_pipe, PROMPTS, out, **{**EMBED, "max_sequence_length": 9})
    assert stats["shards_kept"] == 0 and len(encode_calls) == 3
    assert prompt_embeddings.load_guidance(out)[1].shape == (77 + 9, 32)

    embed_prompts(text_pipe, PROMPTS[:2], out, **EMBED)
    assert len(shards.shard_paths(out)) == 2  # shards beyond the plan are removed


def test_embed_text_stage_keeps_its_finished_shards(tmp_path, tiny_sd3_dir, encode_calls):
    import pyarrow as pa

    from a2i_core.core.candidates import CANDIDATES_KIND
    from a2i_core.pipeline.embed_text import embed_text
    from tests.conftest import offline

    candidates = tmp_path / "candidates.parquet"
    shards.write_table(pa.table({"prompt": PROMPTS}), candidates, CANDIDATES_KIND)
    cfg = offline("diffusion", shard_rows=2, batch_size=2)
    embed_text(cfg, candidates, tiny_sd3_dir, tmp_path / "text")
    assert len(encode_calls) == 3
    encode_calls.clear()
    assert embed_text(cfg, candidates, tiny_sd3_dir, tmp_path / "text")["shards_kept"] == 3 and encode_calls == []
    stats = embed_text(dataclasses.replace(cfg, use_t5=False), candidates, tiny_sd3_dir, tmp_path / "text")
    assert stats["shards_kept"] == 0 and len(encode_calls) == 3


class CountingPipe:
    """An image pipeline that records each call's batch size and raises KeyboardInterrupt on call ``interrupt_at``."""

    def __init__(self, pipe, interrupt_at: int | None = None):
        self.pipe, self.interrupt_at, self.batches = pipe, interrupt_at, []

    def __call__(self, **kwargs):
        self.batches.append(len(kwargs["pooled_prompt_embeds"]))
        if len(self.batches) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.pipe(**kwargs)

    def __getattr__(self, name: str):  # the layered row's regions drive the transformer and VAE themselves
        return getattr(self.pipe, name)


def _render_inputs(tiny_sd3_dir, n: int = 5) -> tuple:
    text_side = load_sd3(tiny_sd3_dir, "text", CPU)
    pooled, sequence = encode(text_side, ["an image of a dog", "an image of a bell", ""], 8)
    empty = np.asarray(sequence[2])  # (L, D)
    settings = RenderSettings(steps=2, guidance=4.0, size=32, seed=5, batch_size=2)
    rows = pooled[np.arange(n) % 2]  # (n, P): images 0 and 2 differ by their seed only
    return rows, lambda idx: np.stack([empty] * len(idx)), pooled[2], empty, settings, CPU, torch.float32


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int16)


def test_render_iter_resumes_with_the_same_images(tiny_sd3_dir, image_pipe):
    args = _render_inputs(tiny_sd3_dir)  # 5 images: batches [0, 1], [2, 3], [4]
    reference = {i: _pixels(im) for i, im in render(image_pipe, *args)}
    assert np.abs(reference[0] - reference[2]).mean() > 1  # each image has its own seed

    interrupted, done = CountingPipe(image_pipe, interrupt_at=2), {}
    with pytest.raises(KeyboardInterrupt):
        for i, image in render_iter(interrupted, *args):
            done[i] = _pixels(image)  # each batch arrives as soon as it is rendered
    assert sorted(done) == [0, 1]

    resumed_pipe = CountingPipe(image_pipe)
    resumed = {i: _pixels(im) for i, im in render_iter(resumed_pipe, *args, skip=set(done))}
    assert sorted(resumed) == [2, 3, 4] and resumed_pipe.batches == [2, 1]  # the first batch is not rendered again
    for i, pixels in {**done, **resumed}.items():
        assert np.array_equal(pixels, reference[i]), i

    # A batch partly done is rendered whole (its composition stays that of an uninterrupted run), the done image
    # not yielded; two processes split the batches as one does.
    split_pipe = CountingPipe(image_pipe)
    split = {i: _pixels(im) for rank in (0, 1)
             for i, im in render_iter(split_pipe, *args, world=World(rank, 2, rank), skip={2})}
    assert sorted(split) == [0, 1, 3, 4] and sorted(split_pipe.batches) == [1, 2, 2]
    for i, pixels in split.items():
        assert np.array_equal(pixels, reference[i]), i


@pytest.mark.e2e
def test_render_stage_resumes_from_its_staged_images(demo_workspace, tmp_path, monkeypatch):
    import a2i_core.pipeline.render as stage
    from a2i_core.pipeline.render_rows import LAYERED_ROW, render_rows

    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], ws, ignore=shutil.ignore_patterns(".dvc", ".git"))
    params = load_params(ws / "params.yaml")
    cfg = params.render
    # The stage's own paths from its command line in dvc.yaml: --name path pairs after `-m stages.render`.
    args = shlex.split(YAML(typ="safe", pure=True).load((ws / "dvc.yaml").read_text())["stages"]["render"]["cmd"])
    flags = args[args.index("stages.render") + 1:]
    paths = {flag[2:].replace("-", "_"): ws / value for flag, value in zip(flags[::2], flags[1::2], strict=True)}
    uninterrupted = demo_workspace[0] / "metrics" / "images"
    every = sorted(str(p.relative_to(uninterrupted)) for p in uninterrupted.glob("*/*.png"))
    files = [name for name in every if not name.startswith(f"{LAYERED_ROW}/")]  # the batches' (the layered row: after)
    assert len(plan_batches(len(files), cfg.batch_size)) >= 3
    shutil.rmtree(paths["images"])  # as DVC removes a stage's outputs before running it
    staging = ws / "metrics" / ".images.tmp"
    real_load, real_iter = stage.load_sd3, stage.render_iter
    pipes: list[CountingPipe] = []
    skips: list[set[int]] = []

    def run(run_cfg, interrupt_at: int | None = None) -> None:
        def counting_load(*args, **kwargs) -> CountingPipe:
            pipes.append(CountingPipe(real_load(*args, **kwargs), interrupt_at))
            return pipes[-1]

        monkeypatch.setattr(stage, "load_sd3", counting_load)
        render_rows(run_cfg, params.layers, **paths)

    def recording_iter(*args, skip, **kwargs):
        skips.append(set(skip))
        return real_iter(*args, skip=skip, **kwargs)

    monkeypatch.setattr(stage, "render_iter", recording_iter)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, interrupt_at=2)
    staged = sorted(str(p.relative_to(staging)) for p in staging.glob("*/*.png"))
    assert len(staged) == cfg.batch_size and set(staged) <= set(files)
    assert all(png_text(staging / name).get(stage.DIGEST_KEY) for name in staged)
    (staging / "mapper" / "not-planned.png").write_bytes(b"from a run with other clips")
    (staging / "old_row").mkdir()

    with pytest.raises(KeyboardInterrupt):
        run(dataclasses.replace(cfg, guidance=cfg.guidance + 1), interrupt_at=1)
    assert skips[-1] == set()  # other settings: nothing staged is kept
    assert not (staging / "mapper" / "not-planned.png").exists() and not (staging / "old_row").exists()

    run(cfg)  # the first run's settings again: its staged batch is kept, the other batches rendered
    assert skips[-1] == set(range(cfg.batch_size))
    planned = [len(b) for b in plan_batches(len(files), cfg.batch_size)][1:]
    assert pipes[-1].batches[:len(planned)] == planned  # then the layered row's own, if it draws by joint sequence
    report = json.loads(paths["metrics"].read_text())
    assert report["images_kept"] == cfg.batch_size and report["images_rendered"] == len(files) - cfg.batch_size
    assert not staging.exists()
    assert sorted(str(p.relative_to(paths["images"])) for p in paths["images"].rglob("*") if p.is_file()) == every
    for name in every:
        with Image.open(paths["images"] / name) as a, Image.open(uninterrupted / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
