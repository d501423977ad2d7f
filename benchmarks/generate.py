"""End-to-end latency of one sound -> one image, split into decode, embed, map and render.

    python benchmarks/generate.py --project .demo                # the offline demo's mapper, on CPU
    python benchmarks/generate.py --sd3-medium --device cuda     # SD3 Medium's architecture, random weights, GPU
    python benchmarks/generate.py --sd3-medium --tiny            # the same assembly with the tiny SD3, on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from a2i_core.audio.features import clip_means, embed_waves
from a2i_core.core.audio_io import decode, write_wav
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.diffusion.render import RenderSettings, render
from a2i_core.mapper.model import predict
from a2i_core.serve.generate import SoundToImage, pick_device

# The render benchmark's model builders and GPU sync, shared rather than copied.
_spec = importlib.util.spec_from_file_location("render_benchmark", Path(__file__).with_name("render.py"))
render_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_benchmark)
sync = render_benchmark.sync


@contextlib.contextmanager
def timed(times: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    times[name] = time.perf_counter() - start


def time_one(generator: SoundToImage, clip: Path, settings: RenderSettings, device: torch.device) -> dict:
    """One sound to one image, the way `a2i generate` does it, timed step by step."""
    times: dict[str, float] = {}
    with timed(times, "decode", device):
        wave = decode(clip, generator.encoder.sample_rate)
    with timed(times, "embed", device):
        frames = embed_waves(generator.encoder, generator.frontend, [wave], 64, device)  # [(n, D)]
    with timed(times, "map", device):
        pooled, _ = predict(generator.artifact.mapper, clip_means(frames, frames[0].shape[1]))
    empty = generator.artifact.empty_sequence
    with timed(times, "render", device):
        render(generator.pipe, pooled, lambda idx: np.stack([empty] * len(idx)),
               generator.artifact.empty_pooled, empty, settings, device, generator.dtype)
    return times


def demo_generator(project: Path, device: torch.device) -> tuple[SoundToImage, RenderSettings]:
    from a2i_core.core.params import load_params

    r = load_params(project / "params.yaml").render
    generator = SoundToImage.from_pretrained(project / "models/mapper", project / "models/audio_encoder",
                                             project / "models/sd3", device)
    return generator, dataclasses.replace(RenderSettings.from_params(r), batch_size=1)


def sd3_medium_generator(device: torch.device, steps: int, size: int,
                         tiny: bool = False) -> tuple[SoundToImage, RenderSettings]:
    """The inference object of `a2i generate` with SD3 Medium's architecture (or the tiny SD3), VGGish and a mapper,
    all randomly initialised."""
    from a2i_core.audio.encoder import VGGishEncoder
    from a2i_core.audio.vggish import load_vggish
    from a2i_core.core.provenance import Provenance
    from a2i_core.mapper.artifact import MapperArtifact
    from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig
    from a2i_core.offline.tiny_audio import tiny_vggish_weights

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if tiny:
        with tempfile.TemporaryDirectory() as tmp:
            pipe = render_benchmark.tiny_sd3(Path(tmp) / "sd3", dtype).to(device)
    else:
        pipe = render_benchmark.sd3_medium_on(device, dtype)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        setattr(pipe, name, None)
    pipe.set_progress_bar_config(disable=True)
    pooled_dim, width = pipe.transformer.config.pooled_projection_dim, pipe.transformer.config.joint_attention_dim
    encoder = VGGishEncoder(load_vggish(tiny_vggish_weights()), None, "random")
    provenance = Provenance.from_parts(encoder.provenance(), {"diffusion_model": "benchmark",
                                                              "sequence_shape": (333, width)})
    mapper = AudioToSD3Mapper(MapperConfig(in_dim=128, pooled_dim=pooled_dim, hidden=[512, 1024, 1024],
                                           dropout=[0.3, 0.3, 0.4], provenance=provenance)).eval()
    artifact = MapperArtifact(mapper, np.zeros(pooled_dim, np.float32), np.zeros((333, width), np.float32),
                              ["an image of a dog"], np.ones((1, pooled_dim), np.float32))
    return SoundToImage(artifact, encoder, pipe, device, dtype), RenderSettings(steps, 7.0, size, 0, batch_size=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(".demo"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sd3-medium", action="store_true")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="with --sd3-medium: the tiny SD3 instead, for the tests")
    args = parser.parse_args()

    device = pick_device(args.device)
    if args.sd3_medium:
        generator, settings = sd3_medium_generator(device, args.steps, args.size, args.tiny)
    else:
        if not (args.project / "models/mapper").is_dir():
            raise SystemExit(f"{args.project}: no trained mapper; run `make demo` first")
        generator, settings = demo_generator(args.project, device)

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "bell.wav"
        write_wav(clip, synthesize(next(iter(clip_specs(["bell"], 1, 5.0, 5.0, 0).values()))))
        time_one(generator, clip, settings, device)  # warm-up: kernels, caches, ffmpeg's first start
        rows = [time_one(generator, clip, settings, device) for _ in range(args.repeats)]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    model = f"offline profile ({args.project})" if not args.sd3_medium else \
        "tiny SD3, random weights" if args.tiny else "SD3 Medium architecture, random weights"
    print(f"\na2i generate latency on {name}: {model}, 5 s clip, {settings.size}², {settings.steps} steps, "
          f"median of {args.repeats}\n")
    print("| step | seconds |")
    print("| --- | ---: |")
    for step in ("decode", "embed", "map", "render"):
        print(f"| {step} | {np.median([r[step] for r in rows]):.4f} |")
    print(f"| **total** | {np.median([sum(r.values()) for r in rows]):.4f} |")


if __name__ == "__main__":
    main()
