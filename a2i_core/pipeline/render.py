"""render_reference and render: images for a few test clips per class (held-out classes' clips too), each with an
index of its images and their timing; render (:mod:`a2i_core.pipeline.render_rows`) also draws the contact sheet of
both.

Rows, each with the same seed per clip. render_reference draws what needs no mapper: the true prompt's own SD3
embeddings (the upper bound) and the training-set mean embedding (the lower bound); render draws the mapper's rows
(with render.sequence_fill, then with each other fill). So an experiment on the mapper alone redraws only its rows.
Both stages choose their clips and render with the same functions. Spreads over GPUs under torchrun; every image is
the same however it is run. Each image is saved as soon as it is rendered into a staging directory beside the
images, with a digest of its inputs in the PNG; a rerun after a kill keeps the staged images whose digest matches and
renders the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core.core.candidates import HELDOUT
from a2i_core.core.devices import resolve_dtype
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path, replace_dir, write_json
from a2i_core.core.hub import model_identity
from a2i_core.core.names import safe_name
from a2i_core.core.params import RenderParams
from a2i_core.diffusion.fills import FILLS, SequenceFill, fill_sequence
from a2i_core.diffusion.images import png_text, save_png
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_sequences
from a2i_core.diffusion.render import RenderSettings, compile_for_speed, image_digest, plan_batches, render_iter
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.mapper.pairs import Pairs, load_pairs, load_token_targets

log = logging.getLogger(__name__)

DIGEST_KEY = "a2i.inputs_sha256"  # the PNG text chunk holding what the image was made from
INDEX_COLUMNS = ["row", "file", "label", "clip_id", "prompt", "split"]


@dataclass(frozen=True)
class Row:
    """One way of conditioning the chosen clips: a folder of images, a column of the contact sheet."""

    name: str
    pooled: np.ndarray  # (n, P): clip i's pooled embedding
    sequence: Callable[[int], np.ndarray]  # clip i -> its (L, D) sequence embedding


@dataclass(frozen=True)
class Rendered:
    """What ``_render`` made, on the main process: the images, still in ``staging``, and their index."""

    staging: Path
    table: pd.DataFrame  # INDEX_COLUMNS, one line per image, files relative to staging (and then to the images)
    report: dict  # settings and speed
    pipe: object  # SD3's image side, as loaded to render them


def render_reference(cfg: RenderParams, candidates: Path, audio_features: Path, text_features: Path, sd3: Path,
                     images: Path, index: Path, metrics: Path, world: World = SOLO) -> None:
    """The rows no mapper takes part in: the true prompt's and the training-set mean's images of the chosen clips."""
    pairs = load_pairs(candidates, audio_features, text_features)
    made_with, found = pairs.provenance["diffusion_model"], model_identity(sd3)
    if made_with != found:
        raise A2IError(f"{text_features}: embedded with {made_with!r}, but {sd3} is {found!r}: rerun embed_text")
    picked = pick_clips(pairs, cfg.clips_per_class)
    clips = picked.frame
    guidance = load_guidance(text_features)  # (P,), (L, D): the negative branch, and the empty_prompt fill
    full = load_sequences(text_features, clips["prompt"].tolist())  # None unless diffusion.store_sequence
    # The prompt bank a mapper is trained with (train stage): the same prompts, pooled and stored sequences.
    bank = (pairs.prompt_pooled, load_sequences(text_features, pairs.prompts))
    # Without whole sequences, the true prompt gets its stored first tokens over the fill.
    heads = None if full is not None else load_token_targets(text_features, clips["prompt"].tolist())
    mean_pooled = pairs.subset("train").mean_pooled()[None]  # (1, P)
    rows = reference_rows(cfg, picked.pooled, full, heads, mean_pooled, guidance[1], *bank)
    done = render_staged(cfg, clips, rows, sd3, guidance, images, world)
    if done is not None:
        publish(done, images, index)
        write_json(metrics, {**done.report, "true_prompt_sequence": "full" if full is not None else "head"})


def filled(cfg: RenderParams, fill: str, pooled: np.ndarray, heads: np.ndarray | None, empty_sequence: np.ndarray,
           bank_pooled: np.ndarray, bank_sequences: np.ndarray | None) -> Callable[[int], np.ndarray]:
    """Image i's whole (L, D) sequence: ``fill`` (a sequence fill's name) for the pooled embeddings ``pooled`` (n, P),
    its first rows the predicted or stored tokens ``heads[i]`` where there are some."""
    rows = SequenceFill.from_params(cfg, fill).rows(pooled, empty_sequence, bank_pooled, bank_sequences)
    return lambda i: fill_sequence(rows(i), None if heads is None else heads[i])


def reference_rows(cfg: RenderParams, pooled: np.ndarray, full: np.ndarray | None, heads: np.ndarray | None,
                   mean_pooled: np.ndarray, empty_sequence: np.ndarray, bank_pooled: np.ndarray,
                   bank_sequences: np.ndarray | None) -> list[Row]:
    """The rows no mapper takes part in: the true prompt (its pooled embeddings ``pooled`` (n, P) with its whole
    sequences ``full``, or else its first tokens ``heads`` over the fill: the upper bound) and ``mean_pooled`` (1, P)
    for every clip (the lower bound)."""
    true_sequence = full.__getitem__ if full is not None else filled(cfg, cfg.sequence_fill, pooled, heads,
                                                                     empty_sequence, bank_pooled, bank_sequences)
    mean_sequence = filled(cfg, cfg.sequence_fill, mean_pooled, None, empty_sequence, bank_pooled, bank_sequences)
    return [Row("true_prompt", pooled, true_sequence),
            Row("baseline_mean", np.repeat(mean_pooled, len(pooled), axis=0), lambda i: mean_sequence(0))]


def mapper_rows(cfg: RenderParams, pooled: np.ndarray, heads: np.ndarray | None, empty_sequence: np.ndarray,
                bank_pooled: np.ndarray, bank_sequences: np.ndarray | None) -> list[Row]:
    """The mapper's predictions ``pooled`` (n, P) and ``heads`` drawn once per sequence fill: ``mapper`` with
    render.sequence_fill, ``mapper_fill_<name>`` with each other (nearest_prompts only with the bank's sequences)."""
    fills = [cfg.sequence_fill, *(f for f in FILLS if f != cfg.sequence_fill)]
    if bank_sequences is None and "nearest_prompts" in fills[1:]:
        log.info("no nearest_prompts row: the mapper has no prompt sequences (diffusion.store_sequence: false)")
        fills.remove("nearest_prompts")
    return [Row("mapper" if k == 0 else f"mapper_fill_{name}", pooled,
                filled(cfg, name, pooled, heads, empty_sequence, bank_pooled, bank_sequences))
            for k, name in enumerate(fills)]


def pick_clips(pairs: Pairs, clips_per_class: int, splits: tuple[str, ...] = ("test", HELDOUT)) -> Pairs:
    """The clips every row draws: the first ``clips_per_class`` clips of ``splits`` of each class by id; held-out
    classes have no test clips, so theirs are drawn too, to show what an unseen sound becomes."""
    unseen = pairs.take(np.flatnonzero(pairs.frame["split"].isin(splits).to_numpy()))
    chosen = unseen.frame.sort_values("clip_id").groupby("label").head(clips_per_class).index.to_numpy()
    return unseen.take(chosen)


def render_staged(cfg: RenderParams, clips: pd.DataFrame, rows: list[Row], sd3: Path,
            guidance: tuple[np.ndarray, np.ndarray], images: Path, world: World) -> Rendered | None:
    """Each row's image of each clip (clip i's seed: render.seed + i, in every row), staged beside ``images``,
    with the empty prompt's ``guidance`` (pooled, sequence) as the negative; on the main process, what was made
    (None on the others)."""
    n = len(clips)
    pooled = np.concatenate([row.pooled for row in rows]).astype(np.float32)  # (rows * n, P)

    def sequences(indices: list[int]) -> np.ndarray:
        return np.stack([rows[j // n].sequence(j % n) for j in indices])  # (B, L, D)

    empty_pooled, empty_sequence = guidance
    device = world.device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_sd3(sd3, "image", device, dtype)
    if cfg.compile:
        compile_for_speed(pipe)
    seeds = [cfg.seed + j % n for j in range(len(pooled))]  # one seed per clip, shared by its rows
    # Labels come from data ('../x', '/', 10 KB): a file is named by the label only when it is plain, else a safe id.
    files = [f"{rows[j // n].name}/{safe_name(clips['label'][j % n])}-{clips['clip_id'][j % n]}.png"
             for j in range(len(pooled))]
    # Staged images survive a kill (DVC's outputs do not): a rerun keeps those whose inputs are unchanged.
    staging = images.with_name(f".{images.name}.tmp")
    if world.is_main:
        _prune_staging(staging, set(files))
        for row in rows:
            (staging / row.name).mkdir(parents=True, exist_ok=True)
    world.barrier()

    settings = RenderSettings.from_params(cfg)
    context = json.dumps({
        "steps": cfg.steps, "guidance": cfg.guidance, "size": cfg.size, "dtype": str(dtype), "device": device.type,
        "compile": cfg.compile, "diffusion_model": model_identity(sd3),
        "negative": hashlib.sha256(np.asarray(empty_pooled, np.float32).tobytes()
                                   + np.asarray(empty_sequence, np.float32).tobytes()).hexdigest()}, sort_keys=True)
    # Only this process's images: the others check (and render) their own.
    my_batches = [batch for _, batch in world.mine(plan_batches(len(pooled), cfg.batch_size))]
    mine = [j for batch in my_batches for j in batch]
    own = {j: image_digest(pooled[j], sequences([j])[0], seeds[j], context) for j in mine}
    # Batch-mates change an image's pixels by a rounding step: an image is kept only if its whole batch is the same.
    digests = {j: hashlib.sha256(" ".join(own[i] for i in batch).encode() + f" {j}".encode()).hexdigest()
               for batch in my_batches for j in batch}
    kept = {j for j in mine if png_text(staging / files[j]).get(DIGEST_KEY) == digests[j]}

    start = time.monotonic()
    rendered = 0
    for j, image in render_iter(pipe, pooled, sequences, empty_pooled, empty_sequence, settings, device, dtype,
                                seeds, world, skip=kept):
        save_png(image, staging / files[j], {DIGEST_KEY: digests[j]})  # saved now: a kill loses one batch at most
        rendered += 1
    parts = world.gather((time.monotonic() - start, len(kept), rendered))  # also waits for every process's images
    if not world.is_main:
        return None
    seconds = max(p[0] for p in parts)
    n_kept, n_rendered = sum(p[1] for p in parts), sum(p[2] for p in parts)
    log.info("rendered %d images; kept %d staged by an earlier run with the same inputs", n_rendered, n_kept)
    table = pd.DataFrame({"row": [rows[j // n].name for j in range(len(files))], "file": files,
                          **{key: [clips[key][j % n] for j in range(len(files))]
                             for key in ("label", "clip_id", "prompt", "split")}})
    return Rendered(staging, table, {
        "images": len(files), "clips": n, "size": cfg.size, "steps": cfg.steps, "guidance": cfg.guidance,
        "sequence_fill": cfg.sequence_fill, "rows": [row.name for row in rows],
        "processes": world.size, "device": device.type, "dtype": str(dtype).removeprefix("torch."),
        "images_rendered": n_rendered, "images_kept": n_kept,
        "seconds_per_image": round(seconds / max(n_rendered, 1), 4)}, pipe)


def publish(done: Rendered, images: Path, index: Path) -> None:
    """The staged images become ``images`` whole, then their index is written."""
    replace_dir(done.staging, images)
    with atomic_path(index) as tmp:
        done.table.to_csv(tmp, index=False)


def _prune_staging(staging: Path, planned: set[str]) -> None:
    """Remove from ``staging`` what this run will not write (other clips or rows, a killed write's temporary
    file): the whole directory becomes the images output."""
    if not staging.is_dir():
        return
    keep_dirs = {parent for file in planned for parent in Path(file).parents}
    for path in sorted(staging.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # deepest first
        relative = path.relative_to(staging)
        if path.is_dir() and not path.is_symlink():
            if relative not in keep_dirs:
                shutil.rmtree(path)
        elif relative.as_posix() not in planned:
            path.unlink()
