"""embed_text: SD3 text embeddings, once per unique prompt of the candidates (and the empty prompt).

The features directory is not cleared first: embed_prompts keeps the shards a previous run finished with the same
inputs, and removes the ones beyond the plan.
"""

from __future__ import annotations

from pathlib import Path

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.devices import resolve_dtype
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.files import write_json
from a2i_core.core.hub import model_identity
from a2i_core.core.params import DiffusionParams
from a2i_core.diffusion.prompt_embeddings import embed_prompts
from a2i_core.diffusion.sd3 import joint_attention_dim, load_sd3


def embed_text(cfg: DiffusionParams, candidates: Path, sd3: Path, features: Path, metrics: Path | None = None,
               world: World = SOLO) -> dict:
    prompts = shards.read_table(candidates, CANDIDATES_KIND, columns=["prompt"])["prompt"].to_pylist()
    device = world.device(cfg.device)
    pipe = load_sd3(sd3, "text", device, resolve_dtype(cfg.dtype, device), use_t5=cfg.use_t5)
    stats = embed_prompts(pipe, prompts, features, tokens=cfg.tokens, max_sequence_length=cfg.max_sequence_length,
                          batch_size=cfg.batch_size, shard_rows=cfg.shard_rows, diffusion_model=model_identity(sd3),
                          store_sequence=cfg.store_sequence, world=world,
                          joint_width=None if cfg.use_t5 else joint_attention_dim(sd3))
    if world.is_main and metrics is not None:
        write_json(metrics, stats)
    return stats
