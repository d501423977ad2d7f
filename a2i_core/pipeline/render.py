"""render: images for a few test clips per class (held-out classes' clips too), a contact sheet, an index of the
images and their timing.

Rows, each with the same seed per clip: the mapper (with render.sequence_fill, then with each other fill),
the true prompt's own SD3 embeddings (the upper bound), and the training-set mean embedding (the lower bound).
Spreads over GPUs under torchrun; every image is the same however it is run. Each image is saved as soon as it is
rendered into a staging directory beside the images, with a digest of its inputs in the PNG; a rerun after a kill
keeps the staged images whose digest matches and renders the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.core.candidates import HELDOUT
from a2i_core.core.devices import resolve_dtype
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.files import atomic_path, replace_dir, write_json
from a2i_core.core.hub import model_identity
from a2i_core.core.names import safe_name
from a2i_core.core.params import RenderParams
from a2i_core.diffusion.fills import FILLS, SequenceFill, fill_sequence
from a2i_core.diffusion.images import SHEET_CELL, contact_sheet, png_text, save_png
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_sequences
from a2i_core.diffusion.render import RenderSettings, compile_for_speed, image_digest, plan_batches, render_iter
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict
from a2i_core.mapper.pairs import load_pairs_for, load_token_targets

log = logging.getLogger(__name__)

DIGEST_KEY = "a2i.inputs_sha256"  # the PNG text chunk holding what the image was made from


def render_rows(cfg: RenderParams, mapper_dir: Path, candidates: Path, audio_features: Path, text_features: Path,
                sd3: Path, images: Path, sheet: Path, index: Path, metrics: Path, world: World = SOLO) -> None:
    artifact = MapperArtifact.load(mapper_dir)
    mapper = artifact.mapper
    mapper.config.provenance.check(str(sd3), diffusion_model=model_identity(sd3))
    pairs = load_pairs_for(mapper, candidates, audio_features, text_features, tokens=False)
    # Held-out classes have no test clips: theirs are drawn too, to show what an unseen sound becomes.
    unseen = pairs.take(np.flatnonzero(pairs.frame["split"].isin(["test", HELDOUT]).to_numpy()))
    chosen = unseen.frame.sort_values("clip_id").groupby("label").head(cfg.clips_per_class).index.to_numpy()
    picked = unseen.take(chosen)  # only the chosen clips' inputs and targets are gathered
    clips = picked.frame
    pred_pooled, pred_tokens = predict(mapper, *picked.inputs(mapper.config.input))
    empty_pooled, empty_sequence = load_guidance(text_features)
    full = load_sequences(text_features, clips["prompt"].tolist())  # None unless diffusion.store_sequence
    # Without whole sequences, the true prompt gets its stored first tokens over the fill.
    true_heads = load_token_targets(text_features, clips["prompt"].tolist()) if full is None else None
    mean_pooled = pairs.subset("train").mean_pooled()[None]  # (1, P)
    fills = [cfg.sequence_fill, *(f for f in FILLS if f != cfg.sequence_fill)]
    if artifact.prompt_sequences is None and "nearest_prompts" in fills[1:]:
        log.info("no nearest_prompts row: the mapper has no prompt sequences (diffusion.store_sequence: false)")
        fills.remove("nearest_prompts")

    def filled(name: str, pooled: np.ndarray, tokens: np.ndarray | None) -> Callable[[int], np.ndarray]:
        fill = SequenceFill.from_params(cfg, name).rows(pooled, empty_sequence, artifact.prompt_pooled,
                                                        artifact.prompt_sequences)
        return lambda i: fill_sequence(fill(i), None if tokens is None else tokens[i])

    main_fill = filled(cfg.sequence_fill, pred_pooled, pred_tokens)
    true_fill = full.__getitem__ if full is not None else filled(cfg.sequence_fill, picked.pooled, true_heads)
    mean_fill = filled(cfg.sequence_fill, mean_pooled, None)
    # Each row: (name, pooled (n, P), sequence of clip i).
    rows = [
        ("mapper", pred_pooled, main_fill),
        *((f"mapper_fill_{name}", pred_pooled, filled(name, pred_pooled, pred_tokens)) for name in fills[1:]),
        ("true_prompt", picked.pooled, true_fill),
        ("baseline_mean", np.repeat(mean_pooled, len(clips), axis=0), lambda i: mean_fill(0)),
    ]
    n = len(clips)
    pooled = np.concatenate([r[1] for r in rows]).astype(np.float32)  # (rows * n, P)

    def sequences(indices: list[int]) -> np.ndarray:
        return np.stack([rows[j // n][2](j % n) for j in indices])  # (B, L, D)

    device = world.device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_sd3(sd3, "image", device, dtype)
    if cfg.compile:
        compile_for_speed(pipe)
    seeds = [cfg.seed + j % n for j in range(len(pooled))]  # one seed per clip, shared by its rows
    # Labels come from data ('../x', '/', 10 KB): a file is named by the label only when it is plain, else a safe id.
    files = [f"{rows[j // n][0]}/{safe_name(clips['label'][j % n])}-{clips['clip_id'][j % n]}.png"
             for j in range(len(pooled))]
    # Staged images survive a kill (DVC's outputs do not): a rerun keeps those whose inputs are unchanged.
    staging = images.with_name(f".{images.name}.tmp")
    if world.is_main:
        _prune_staging(staging, set(files))
        for name, _, _ in rows:
            (staging / name).mkdir(parents=True, exist_ok=True)
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
    seconds = max(p[0] for p in parts)
    n_kept, n_rendered = sum(p[1] for p in parts), sum(p[2] for p in parts)
    if world.is_main:
        log.info("rendered %d images; kept %d staged by an earlier run with the same inputs", n_rendered, n_kept)
        table = pd.DataFrame({"row": [rows[j // n][0] for j in range(len(files))], "file": files,
                              "label": [clips["label"][j % n] for j in range(len(files))],
                              "clip_id": [clips["clip_id"][j % n] for j in range(len(files))],
                              "prompt": [clips["prompt"][j % n] for j in range(len(files))],
                              "split": [clips["split"][j % n] for j in range(len(files))]})
        # Every rendered row is a column of the sheet, in the order of the rows above.
        sheet_rows = [(f"{clips['label'][i]} ({clips['clip_id'][i]})",
                       [_thumbnail(staging / files[r * n + i]) for r in range(len(rows))]) for i in range(n)]
        with atomic_path(sheet) as tmp:
            contact_sheet(sheet_rows, [name.replace("_", " ") for name, _, _ in rows]).save(tmp, format="PNG")
        replace_dir(staging, images)
        with atomic_path(index) as tmp:
            table.to_csv(tmp, index=False)
        write_json(metrics, {
            "images": len(files), "clips": n, "size": cfg.size, "steps": cfg.steps, "guidance": cfg.guidance,
            "sequence_fill": cfg.sequence_fill, "rows": [name for name, _, _ in rows],
            "true_prompt_sequence": "full" if full is not None else "head",
            "processes": world.size, "device": device.type, "dtype": str(dtype).removeprefix("torch."),
            "images_rendered": n_rendered, "images_kept": n_kept,
            "seconds_per_image": round(seconds / max(n_rendered, 1), 4)})


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


def _thumbnail(path: Path, size: int = SHEET_CELL) -> Image.Image:
    """A contact-sheet cell, its file closed at once: thousands of images must not hold thousands of handles."""
    with Image.open(path) as image:
        return image.convert("RGB").resize((size, size))
