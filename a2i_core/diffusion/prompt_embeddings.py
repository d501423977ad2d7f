"""SD3 text embeddings, computed once per unique prompt and stored in Parquet shards.

For each prompt we keep the pooled embedding (2048-D for SD3 Medium, float32) and the first ``tokens``
rows of the joint sequence embedding (float16). The empty prompt, used for classifier-free guidance and as
the sequence that rendering pairs with a predicted pooled vector, is also stored whole in ``guidance.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from a2i_core.core import provenance, shards
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError

log = logging.getLogger(__name__)

TEXT_KIND = "text_features"
GUIDANCE_KIND = "text_guidance"
GUIDANCE_FILE = "guidance.parquet"
EMPTY_PROMPT = ""


@torch.inference_mode()
def encode(pipe, prompts: list[str], max_sequence_length: int,
           joint_width: int | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """One encoder pass over a batch: pooled (B, P) float32 and the joint sequence (B, 77 + T5 tokens, D).

    Without T5 (``pipe.text_encoder_3 is None``), its part of the sequence is zeros of width ``joint_width``,
    which is what diffusers feeds the transformer then; diffusers' own zero path needs the transformer
    loaded, so the CLIP part is composed here the way ``encode_prompt`` composes it.
    """
    device = pipe._execution_device
    if pipe.text_encoder_3 is not None:
        sequence, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device,
            do_classifier_free_guidance=False, max_sequence_length=max_sequence_length)
        return pooled.float().cpu().numpy(), sequence.float().cpu()
    if joint_width is None:
        raise ValueError("joint_width is needed to encode without T5")
    clip_l, pooled_l = pipe._get_clip_prompt_embeds(prompt=prompts, device=device, clip_model_index=0)
    clip_g, pooled_g = pipe._get_clip_prompt_embeds(prompt=prompts, device=device, clip_model_index=1)
    clip = torch.cat([clip_l, clip_g], dim=-1)  # (B, 77, 768 + 1280)
    clip = torch.nn.functional.pad(clip, (0, joint_width - clip.shape[-1]))  # (B, 77, D)
    t5 = clip.new_zeros(len(prompts), max_sequence_length, joint_width)  # (B, T, D)
    pooled = torch.cat([pooled_l, pooled_g], dim=-1)  # (B, P)
    return pooled.float().cpu().numpy(), torch.cat([clip, t5], dim=-2).float().cpu()


def inputs_digest(chunk: list[str], settings: dict[str, str]) -> str:
    """What a shard was computed from: its prompts, in order, and every setting that changes the numbers."""
    return hashlib.sha256(json.dumps({"settings": settings, "prompts": chunk}, sort_keys=True).encode()).hexdigest()


def embed_prompts(pipe, prompts: list[str], out_dir: str | Path, tokens: int, max_sequence_length: int,
                  batch_size: int, shard_rows: int, diffusion_model: str, store_sequence: bool = False,
                  joint_width: int | None = None, world: World = SOLO) -> dict:
    """Write ``part-*.parquet`` (one row per unique prompt, the empty one included) and ``guidance.parquet``.

    A shard already on disk whose recorded inputs digest (its prompts and every setting that changes the numbers)
    matches is kept, so an interrupted run recomputes only unfinished shards; shards beyond the plan are removed.
    ``guidance.parquet`` records the digest of the shard holding the empty prompt, and that shard is recomputed
    when the guidance file is missing or stale, so both always come from the same encoder pass. Under torchrun
    each process encodes every ``world.size``-th shard; the shards are the same whatever the number of processes.
    Every table records ``diffusion_model`` and the sequence shape as its provenance.
    """
    out_dir = Path(out_dir)
    unique = sorted(set(prompts) | {EMPTY_PROMPT})
    plan = [unique[i : i + shard_rows] for i in range(0, len(unique), shard_rows)]
    if world.is_main:
        shards.prepare_shard_dir(out_dir, len(plan))
    world.barrier()
    mine = world.mine(plan)
    meta: dict[str, str] = {"tokens": str(tokens), "max_sequence_length": str(max_sequence_length),
                            "t5": str(pipe.text_encoder_3 is not None).lower()}
    # Batching does not change a prompt's numbers (CLIP pads to 77 tokens, T5 to max_sequence_length), so the
    # batch size is left out: a rerun with another one keeps the shards.
    settings = {**meta, "diffusion_model": diffusion_model, "store_sequence": str(store_sequence).lower(),
                "dtype": str(pipe.text_encoder.dtype).removeprefix("torch."), "joint_width": str(joint_width)}
    guidance_path = out_dir / GUIDANCE_FILE
    calls = kept = 0
    start = time.monotonic()
    with tqdm(total=sum(len(c) for _, c in mine), desc=f"embed_text[{world.rank}]", unit="prompt",
              position=world.rank) as bar:
        for shard, chunk in mine:
            path = shards.shard_path(out_dir, shard)
            digest = inputs_digest(chunk, settings)
            if _recorded_digest(path) == digest and (
                    EMPTY_PROMPT not in chunk or _recorded_digest(guidance_path) == digest):
                kept += 1
                bar.update(len(chunk))
                continue
            shard_meta = {**meta, "inputs_sha256": digest}
            pooled_parts, token_parts, sequence_parts = [], [], []
            for i in range(0, len(chunk), batch_size):
                batch = chunk[i : i + batch_size]
                pooled, sequence = encode(pipe, batch, max_sequence_length, joint_width)  # (B, P), (B, L, D)
                calls += len(batch)
                if tokens > sequence.shape[1]:
                    raise A2IError(f"diffusion.tokens={tokens} exceeds the sequence length {sequence.shape[1]}")
                shard_meta.update(provenance.to_metadata({"diffusion_model": diffusion_model,
                                                          "sequence_shape": tuple(sequence.shape[1:])}))
                pooled_parts.append(pooled)
                token_parts.append(sequence[:, :tokens].numpy())  # (B, N, D)
                if store_sequence:
                    sequence_parts.append(sequence.numpy())
                if EMPTY_PROMPT in batch:
                    _write_guidance(out_dir, pooled[batch.index(EMPTY_PROMPT)],
                                    sequence[batch.index(EMPTY_PROMPT)].numpy(), shard_meta)
                bar.update(len(batch))
            columns = {
                "prompt": pa.array(chunk, pa.string()),
                "pooled": shards.fixed_list(np.concatenate(pooled_parts)),
                "tokens": shards.fixed_list(np.concatenate(token_parts), pa.float16()),
            }
            if store_sequence:
                columns["sequence"] = shards.fixed_list(np.concatenate(sequence_parts), pa.float16())
            table = pa.table(columns)
            shard_meta.update(pooled_dim=str(table["pooled"].type.list_size),
                              width=str(table["tokens"].type.value_type.list_size))
            # Written last: a shard on disk with its digest means its guidance (if it holds the empty prompt) is too.
            shards.write_table(table, path, TEXT_KIND, shard_meta)
    seconds = time.monotonic() - start
    parts = world.gather((calls, kept))  # also waits for every process's shards
    calls, kept = (sum(p[i] for p in parts) for i in range(2))
    if world.is_main:
        if kept:
            log.info("%d of %d shards were already complete with the same inputs: kept, not recomputed", kept,
                     len(plan))
        log.info("embedded %d of %d unique prompts with %d encoder calls in %.1f s (%d processes)", calls,
                 len(unique), calls, seconds, world.size)
    return {"prompts": len(unique), "encoder_calls": calls, "shards_kept": kept, "seconds": round(seconds, 3),
            "prompts_per_second": round(calls / max(seconds, 1e-9), 2)}


def _recorded_digest(path: Path) -> str | None:
    """The inputs digest a finished table recorded, or None when it is missing or unreadable."""
    try:
        return shards.table_metadata(path).get("inputs_sha256")
    except (OSError, pa.ArrowException):
        return None


def _write_guidance(out_dir: Path, pooled: np.ndarray, sequence: np.ndarray, meta: dict[str, str]) -> None:
    table = pa.table({
        "prompt": pa.array([EMPTY_PROMPT]),
        "pooled": shards.fixed_list(pooled[None]),
        "sequence": shards.fixed_list(sequence[None], pa.float16()),  # (1, L, D)
    })
    shards.write_table(table, out_dir / GUIDANCE_FILE, GUIDANCE_KIND, meta)


def load_text_features(directory: str | Path) -> tuple[list[str], np.ndarray]:
    """All prompts and their pooled embeddings (n, P), the empty prompt excluded."""
    table = shards.read_shards(directory, TEXT_KIND, columns=["prompt", "pooled"])
    prompts = table["prompt"].to_pylist()
    pooled = shards.to_numpy(table["pooled"]).astype(np.float32)
    keep = [i for i, p in enumerate(prompts) if p != EMPTY_PROMPT]
    return [prompts[i] for i in keep], pooled[keep]


def load_guidance(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The empty prompt's pooled (P,) and full sequence (L, D) embeddings."""
    table = shards.read_table(Path(directory) / GUIDANCE_FILE, GUIDANCE_KIND)
    return shards.to_numpy(table["pooled"])[0].astype(np.float32), shards.to_numpy(table["sequence"])[0]


def text_provenance(directory: str | Path) -> dict:
    """The text features' part of a provenance record: the diffusion model and its sequence shape."""
    path = Path(directory) / GUIDANCE_FILE
    shards.read_table(path, GUIDANCE_KIND, columns=["prompt"])  # checks that it is there and of its kind
    return provenance.from_metadata(shards.table_metadata(path), str(directory))


def load_sequences(directory: str | Path, prompts: list[str]) -> np.ndarray | None:
    """The stored whole sequences (n, L, D) of ``prompts``, or None when they were not stored."""
    if "sequence" not in pq.read_schema(shards.shard_paths(directory)[0]).names:
        return None
    table = shards.read_shards(directory, TEXT_KIND, columns=["prompt", "sequence"])
    row = {p: i for i, p in enumerate(table["prompt"].to_pylist())}
    return shards.to_numpy(table["sequence"].take([row[p] for p in prompts]))  # only the rows asked for
