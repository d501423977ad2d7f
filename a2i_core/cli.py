"""The ``a2i`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from a2i_core import workspace as ws
from a2i_core.errors import A2IError, setup_logging
from a2i_core.generate import SoundToImage, pick_device
from a2i_core.params import load_params
from a2i_core.render import RenderSettings, save_png

app = typer.Typer(help="a2i: turn sound into pictures with a frozen Stable Diffusion 3.", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def main() -> None:
    """Sound to pictures: VGGish audio embeddings mapped onto SD3's text conditioning."""


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Where the demo's own DVC repository lives (git-ignored).")] = Path(
        ".demo"),
    profile: Annotated[Path | None, typer.Option(
        help="Overlay merged onto params.yaml [default: profiles/offline.yaml].")] = None,
) -> None:
    """Run the whole pipeline on the offline profile (synthetic sounds, tiny models, CPU) with `dvc repro`."""
    try:
        root = ws.project_root()
        path = ws.prepare(workspace, profile or root / "profiles" / "offline.yaml", root)
        typer.echo(f"workspace: {path}  (its own git + DVC repo; the project's params.yaml is untouched)")
        ws.run(ws.dvc("repro"), path)
        ws.commit(path, "a2i demo: dvc repro")
    except A2IError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    metrics = json.loads((path / "metrics" / "eval.json").read_text())
    typer.echo("\nHeld-out retrieval of the true prompt among all class prompts:")
    typer.echo(f"  top-1 {metrics['top1']:.3f} (chance {metrics['chance_top1']:.3f})   "
               f"top-5 {metrics['top5']:.3f}   cosine {metrics['cosine']:.3f}   mse {metrics['mse']:.4f}")
    typer.echo(f"\nmetrics: {path / 'metrics'}/*.json   (cd {path} && dvc metrics show)")
    typer.echo(f"images:  {path / 'metrics' / 'images'}/   (cd {path} && dvc plots show)")
    typer.echo(f"try a variant: cd {path} && dvc exp run -S train.lr=0.0003 && dvc exp show")


def _project_defaults(project: Path) -> tuple[RenderSettings, str]:
    """Render settings from the project's params.yaml when it has one (the demo's, say), else SD3's usual."""
    path = project / "params.yaml"
    if path.is_file():
        r = load_params(path).render
        return RenderSettings.from_params(r), r.sequence_fill
    return RenderSettings(steps=28, guidance=7.0, size=1024, seed=0, batch_size=4), "empty_prompt"


def _load_generator(project: Path, mapper: Path | None, vggish: Path | None, sd3: Path | None, device: str,
                    dtype: str) -> SoundToImage:
    models = project / "models"
    return SoundToImage.from_pretrained(mapper or models / "mapper", vggish or models / "vggish", sd3 or models / "sd3",
                                        pick_device(device), dtype)


Project = Annotated[Path, typer.Option(help="A project or workspace whose models/ and params.yaml to use.")]
MapperDir = Annotated[Path | None, typer.Option(help="Trained mapper [default: PROJECT/models/mapper].")]
VggishDir = Annotated[Path | None, typer.Option(help="VGGish weights [default: PROJECT/models/vggish].")]
Sd3Dir = Annotated[Path | None, typer.Option(help="SD3 (encoders stage output) [default: PROJECT/models/sd3].")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N; without a GPU, falls back to the CPU.")]
DType = Annotated[str, typer.Option(help="float32, float16 or bfloat16 (CPU always uses float32).")]


@app.command()
def generate(
    audio: Annotated[list[Path], typer.Argument(help="Audio files: any format ffmpeg reads.")],
    out: Annotated[Path, typer.Option(help="Where the PNGs go.")],
    project: Project = Path("."),
    mapper: MapperDir = None,
    vggish: VggishDir = None,
    sd3: Sd3Dir = None,
    seed: Annotated[int | None, typer.Option(help="[default: the project's render.seed]")] = None,
    steps: Annotated[int | None, typer.Option(help="[default: the project's render.steps]")] = None,
    guidance: Annotated[float | None, typer.Option(help="[default: the project's render.guidance]")] = None,
    size: Annotated[int | None, typer.Option(help="[default: the project's render.size]")] = None,
    images_per_sound: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    device: Device = "auto",
    dtype: DType = "bfloat16",
) -> None:
    """Turn sounds into images with a trained mapper (decode, embed, map, render)."""
    setup_logging()
    try:
        missing = [str(p) for p in audio if not p.is_file()]
        if missing:
            raise A2IError(f"no such file: {', '.join(missing)}")
        defaults, fill = _project_defaults(project)
        settings = RenderSettings(steps or defaults.steps, defaults.guidance if guidance is None else guidance,
                                  size or defaults.size, defaults.seed if seed is None else seed, batch_size)
        generator = _load_generator(project, mapper, vggish, sd3, device, dtype)
        sounds = generator.sounds(list(audio))
        seconds = generator.render(sounds, settings, images_per_sound, fill)
    except A2IError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    out.mkdir(parents=True, exist_ok=True)
    for sound in sounds:
        for k, image in enumerate(sound.images):
            name = f"{sound.path.stem}.png" if images_per_sound == 1 else f"{sound.path.stem}-{k}.png"
            save_png(image, out / name)
        nearest = ", ".join(f"{p!r} {s:.3f}" for p, s in sound.nearest)
        typer.echo(f"{sound.path.name}: {nearest}")
    typer.echo(f"{len(sounds) * images_per_sound} images in {out} ({seconds:.1f} s rendering)")


@app.command(name="app")
def web_app(
    project: Project = Path("."),
    mapper: MapperDir = None,
    vggish: VggishDir = None,
    sd3: Sd3Dir = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 7860,
    device: Device = "auto",
    dtype: DType = "bfloat16",
) -> None:
    """Start the web app: upload or record a sound, get an image and its nearest prompts."""
    setup_logging()
    try:
        defaults, fill = _project_defaults(project)
        generator = _load_generator(project, mapper, vggish, sd3, device, dtype)
    except A2IError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    from a2i_core.app import build_app

    build_app(generator, defaults, fill).launch(server_name=host, server_port=port, share=False,
                                                show_error=True)


if __name__ == "__main__":
    app()
