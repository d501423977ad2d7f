"""embed_text: SD3 text embeddings, once per unique prompt (and the empty prompt) -> data/features/text/.

Spreads over GPUs when launched with torchrun (params: launch).
"""

import shutil
from pathlib import Path

from a2i_core import shards
from a2i_core.devices import resolve_dtype
from a2i_core.distributed import close_world, init_world
from a2i_core.encoders import sd3_source
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import write_json
from a2i_core.ingest import CANDIDATES_KIND
from a2i_core.params import load_params
from a2i_core.sd3 import joint_attention_dim, load_sd3
from a2i_core.text import embed_prompts

OUT_DIR = Path("data/features/text")


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().diffusion
    world = init_world()
    prompts = shards.read_table("data/candidates.parquet", CANDIDATES_KIND, columns=["prompt"])["prompt"]
    device = world.device(cfg.device)
    pipe = load_sd3("models/sd3", "text", device, resolve_dtype(cfg.dtype, device), use_t5=cfg.use_t5)
    if world.is_main:
        shutil.rmtree(OUT_DIR, ignore_errors=True)
    world.barrier()
    stats = embed_prompts(pipe, prompts.to_pylist(), OUT_DIR, tokens=cfg.tokens,
                          max_sequence_length=cfg.max_sequence_length, batch_size=cfg.batch_size,
                          shard_rows=cfg.shard_rows, model=sd3_source("models/sd3")[0],
                          store_sequence=cfg.store_sequence, world=world,
                          joint_width=None if cfg.use_t5 else joint_attention_dim("models/sd3"))
    if world.is_main:
        write_json("metrics/text.json", stats)
    close_world(world)


if __name__ == "__main__":
    main()
