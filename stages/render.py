"""render: images for a few held-out clips per class -> metrics/images/*.png and metrics/render.json."""

import time

from a2i_core.devices import resolve_device, resolve_dtype
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.evaluate import predict
from a2i_core.files import atomic_dir, write_json
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params
from a2i_core.render import RenderSettings, render, save_png
from a2i_core.sd3 import load_sd3
from a2i_core.text import load_guidance


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().render
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    test = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text").split("test")
    mapper.check_provenance(test.audio_meta, "data/features/audio")
    chosen = test.frame.sort_values("clip_id").groupby("label").head(cfg.clips_per_class).index.to_numpy()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_sd3("models/sd3", "image", device, dtype)
    empty_pooled, empty_sequence = load_guidance("data/features/text")
    settings = RenderSettings(cfg.steps, cfg.guidance, cfg.size, cfg.seed, cfg.batch_size)
    start = time.monotonic()
    images = render(pipe, predict(mapper, test.audio[chosen]), empty_pooled, empty_sequence, settings, device, dtype)
    seconds = time.monotonic() - start
    rows = test.frame.loc[chosen]
    with atomic_dir("metrics/images") as out:
        for image, (label, clip_id) in zip(images, zip(rows["label"], rows["clip_id"], strict=True), strict=True):
            save_png(image, out / f"{label}-{clip_id}.png")
    write_json("metrics/render.json", {
        "images": len(images), "size": cfg.size, "steps": cfg.steps, "guidance": cfg.guidance,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "seconds_per_image": round(seconds / max(len(images), 1), 4)})


if __name__ == "__main__":
    main()
