"""render: images for a few held-out clips per class -> metrics/images/*.png and metrics/render.json.

Spreads over GPUs when launched with torchrun (params: launch); every image is the same however it is run.
"""

import shutil
import time
from pathlib import Path

from a2i_core.devices import resolve_dtype
from a2i_core.distributed import close_world, init_world
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.evaluate import predict
from a2i_core.files import replace_dir, write_json
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params
from a2i_core.render import RenderSettings, compile_for_speed, render, save_png
from a2i_core.sd3 import load_sd3
from a2i_core.text import load_guidance

OUT_DIR = Path("metrics/images")
TMP_DIR = Path("metrics/.images.tmp")


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().render
    world = init_world()
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    test = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text").split("test")
    mapper.check_provenance(test.audio_meta, "data/features/audio")
    chosen = test.frame.sort_values("clip_id").groupby("label").head(cfg.clips_per_class)
    device = world.device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_sd3("models/sd3", "image", device, dtype)
    if cfg.compile:
        compile_for_speed(pipe)
    empty_pooled, empty_sequence = load_guidance("data/features/text")
    if world.is_main:
        shutil.rmtree(TMP_DIR, ignore_errors=True)
        TMP_DIR.mkdir(parents=True)
    world.barrier()

    start = time.monotonic()
    settings = RenderSettings(cfg.steps, cfg.guidance, cfg.size, cfg.seed, cfg.batch_size)
    images = render(pipe, predict(mapper, test.audio[chosen.index.to_numpy()]), empty_pooled, empty_sequence,
                    settings, device, dtype, world)
    names = [f"{label}-{clip_id}.png" for label, clip_id in zip(chosen["label"], chosen["clip_id"], strict=True)]
    for i, image in images:
        save_png(image, TMP_DIR / names[i])
    seconds = time.monotonic() - start
    world.barrier()
    seconds = max(world.gather(seconds))

    if world.is_main:
        replace_dir(TMP_DIR, OUT_DIR)
        write_json("metrics/render.json", {
            "images": len(names), "size": cfg.size, "steps": cfg.steps, "guidance": cfg.guidance,
            "processes": world.size, "device": device.type, "dtype": str(dtype).removeprefix("torch."),
            "seconds_per_image": round(seconds / max(len(names), 1), 4)})
    close_world(world)


if __name__ == "__main__":
    main()
