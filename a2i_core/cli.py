"""The ``a2i`` command line.

Starting it loads no framework: torch, diffusers, transformers, Gradio, NumPy, PyArrow and the modules that need them
are imported inside the commands that use them, so `a2i --version`, `--help` and a mistyped option answer at once
(tests/serve/test_cli_help.py checks it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shlex
import shutil
import sys
import types
import typing
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import click
import typer

from a2i_core.core.errors import A2IError, first_line, printable, setup_logging
from a2i_core.core.files import project_root
from a2i_core.core.params import DType as DTypeName
from a2i_core.core.params import check_device, load_sections, read_yaml
from a2i_core.core.typed import ParamsError, typed_from_dict

if TYPE_CHECKING:
    from a2i_core.serve.examples import ExampleMaker
    from a2i_core.serve.generate import Sound, SoundToImage

# No rich markup: help texts hold "[default: ...]", which markup would read as a style tag and drop.
log = logging.getLogger(__name__)
OPTIONS = "the command line"  # where _with_options says a value came from, cut from its messages
Section = typing.TypeVar("Section")
# The comparison README shows: the params that differ and every top-1 and AIC column, changed or not (a plain `dvc exp
# show` has ~150 columns; --only-changed alone hides a metric that stayed the same), no dependency hashes.
EXP_SHOW = r"exp show --only-changed --drop '.*/|params\.yaml' --keep '.*(top1|aic)$'"
app = typer.Typer(help="a2i: turn sound into pictures with a frozen Stable Diffusion 3.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None)


def _echo(line: str, err: bool = False) -> None:
    """One line out, escaped by ``printable``: a file name (the user's, or one a folder brings) can hold a newline
    or an escape sequence, and must not forge a line of its own or restyle the terminal."""
    typer.echo(printable(line), err=err)


def _show_version(asked: bool) -> None:
    if asked:
        _echo(f"a2i {package_version('a2i')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print a2i's version and exit.")] = False,
) -> None:
    """Sound to pictures: VGGish audio embeddings mapped onto SD3's text conditioning."""


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Where the demo's own DVC repository lives (git-ignored).")] = Path(
        ".demo"),
    profile: Annotated[list[str] | None, typer.Option(
        help="Overlay merged onto params.yaml: a YAML file, or a profile's name (offline); repeat it to merge "
             "several in order (--profile offline --profile my_sounds.yaml) [default: offline].")] = None,
) -> None:
    """Run the whole pipeline on the offline profile (synthetic sounds, tiny models, CPU) with `dvc repro`."""
    from a2i_core.offline import workspace as ws  # the demo's machinery, loaded only for the demo

    setup_logging()
    try:
        root = project_root()
        path = ws.prepare(workspace, profile or ["offline"], root)
        _echo(f"workspace: {path}  (its own git + DVC repo; the project's params.yaml is untouched)")
        ws.repro(path)
        ws.commit(path, "a2i demo: dvc repro")
    except A2IError as err:
        _echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    metrics = json.loads((path / "metrics" / "eval.json").read_text())
    typer.echo("\nHeld-out retrieval of the true prompt among all class prompts:")
    _echo(f"  top-1 {metrics['top1']:.3f} (chance {metrics['chance_top1']:.3f})   "
          f"top-5 {metrics['top5']:.3f}   cosine {metrics['cosine']:.3f}   mse {metrics['mse']:.4f}")
    dvc = _dvc_command()
    typer.echo("")
    _echo(f"metrics: {path / 'metrics'}/*.json   (cd {path} && {dvc} metrics show)")
    _echo(f"images:  {path / 'metrics' / 'contact_sheet.png'}, images/, images_reference/   "
          f"(cd {path} && {dvc} plots show)")
    rows = json.loads((path / "metrics" / "image_eval_report.json").read_text())["rows"]
    if {"mapper", "true_prompt", "shuffled_audio"} <= set(rows):
        _echo(f"the field's measures: AIC {rows['mapper']['aic']:.2f} (true prompt {rows['true_prompt']['aic']:.2f}, "
              f"shuffled audio {rows['shuffled_audio']['aic']:.2f}), every row and measure in "
              f"{path / 'metrics' / 'image_eval_table.md'}")
    timeline = json.loads((path / "metrics" / "timeline_report.json").read_text())
    if timeline["recordings"]:
        first = path / "metrics" / "timelines" / "timeline-00"
        _echo(f"timelines: segment F1 {timeline['segment_f1']:.2f}, event F1 {timeline['event_f1']:.2f}, keyframes "
              f"zero-shot {timeline['keyframes_zero_shot_top1']:.2f} over {timeline['recordings']} recordings of "
              "test clips end to end")
        _echo(f"           {first / 'storyboard.png'}, {first / 'film.mp4'} (a2i timeline SOUND --out DIR "
              f"--project {path}: your own)")
    mixtures = json.loads((path / "metrics" / "mixtures_report.json").read_text())
    if mixtures["mixtures"]:
        _echo(f"mixtures: recall@2 of both sounds {mixtures['recall_at_2']:.2f} ({mixtures['answer']}; the single "
              f"embedding's {mixtures['recall_at_2_single']:.2f}), panned halves right {mixtures['halves_stereo']:.2f} "
              f"with stereo placement ({mixtures['halves_score']:.2f} without)")
        _echo(f"          {path / 'metrics' / 'mixtures_sheet.png'} (a2i generate SOUND --layers regions --layout "
              "stereo: your own)")
    _echo(f"try a variant: cd {path} && {dvc} exp run -S train.lr=0.0003 && {dvc} {EXP_SHOW}")


def _dvc_command() -> str:
    """dvc as a user can type it from any shell: the one beside this Python (.venv's) unless dvc is on PATH already,
    so the hints work without activating the environment."""
    beside = Path(sys.executable).parent / "dvc"
    on_path = shutil.which("dvc")
    if on_path and Path(on_path).resolve() == beside.resolve():
        return "dvc"
    return shlex.quote(str(beside)) if beside.is_file() else "dvc"


# The params sections `a2i generate` and the app read; a mistake anywhere else in params.yaml is only a note to them.
SERVING_SECTIONS = ("render", "generate")


def _project_params(project: Path, reader: str, names: tuple[str, ...] = SERVING_SECTIONS,
                    optional: tuple[str, ...] = ()) -> Any:
    """The sections ``names`` of the project's params (the demo's, say), else of a2i's own params.yaml, by
    params.yaml's rules; a mistake elsewhere in the file (a failed `dvc exp run -S train.lr=fast` leaves one) is one
    note, and no reason for ``reader`` not to run. A section of ``optional`` is read when the file has one (and then
    by the same rules), and is None with a note when it has none (a project's params.yaml from an older a2i)."""
    path = project / "params.yaml"
    path = path if path.is_file() else project_root() / "params.yaml"
    raw = read_yaml(path) if optional else {}
    present = tuple(name for name in optional if isinstance(raw, dict) and name in raw)
    sections, problem = load_sections(path, (*names, *present))
    if problem is not None:
        _echo(f"note: {problem} (not read by {reader})", err=True)
    for name in optional:
        if name not in present:
            _echo(f"note: {path}: no {name} section: {reader} goes without what needs it (a2i's params.yaml has "
                  "one to copy)", err=True)
    return types.SimpleNamespace(**{**{n: None for n in optional}, **vars(sections)})


def _with_options(section: Section, **options: object) -> Section:
    """A params section with the options given on the command line, built by the loader of params.yaml itself, so
    that an option meets every rule a key does (types, finite numbers: --guidance inf, ranges, bounds)."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return section
    try:
        return typed_from_dict(type(section), {**dataclasses.asdict(section), **given}, OPTIONS)
    except ParamsError as err:
        raise _option_error(ValueError(str(err).removeprefix(f"{OPTIONS}: "))) from None


def _layering(section: Any, mode: str, layout: str | None, size: int) -> Any:
    """params' layers section with --layers and --layout, and room for its regions at the image size."""
    from a2i_core.layers.draw import layering_for

    if section is None:
        raise A2IError("--layers: the project's params.yaml has no layers section (a2i's params.yaml has one to copy)")
    try:
        return layering_for(section, mode, layout, size)
    except A2IError as err:
        raise A2IError(f"--layers: {err}") from None


def _check_runtime(device: str, dtype: str) -> None:
    """--device and --dtype, by params.yaml's rules, before any model is loaded."""
    try:
        check_device(device)
        if dtype not in typing.get_args(DTypeName):
            raise ValueError(f"dtype: must be one of {', '.join(typing.get_args(DTypeName))}, got {dtype!r}")
    except ValueError as err:
        raise _option_error(err) from None


def _option_error(err: ValueError) -> A2IError:
    key, message = str(err).split(": ", 1)
    return A2IError(f"--{key.replace('_', '-')}: {message}")


def _load_generator(project: Path, mapper: Path | None, audio_encoder: Path | None, sd3: Path | None, device: str,
                    dtype: str, max_seconds: float) -> SoundToImage:
    from a2i_core.serve.generate import SoundToImage, pick_device

    models = project / "models"
    mapper_dir = mapper or models / "mapper"
    if not mapper_dir.is_dir() and mapper is None:
        raise A2IError(f"{mapper_dir}: no trained mapper here; pass --project DIR (a project after `dvc repro`), "
                       "or run `make demo` and use --project .demo")
    return SoundToImage.from_pretrained(mapper_dir, audio_encoder or _audio_encoder_dir(models),
                                        sd3 or models / "sd3", pick_device(device), dtype, max_seconds)


def _load_head(generator: SoundToImage, project: Path, label_head: Path | None, answer: str) -> None:
    """The label head layering asks for (``answer`` head): the one named, else the project's; one line when there
    is none or it does not fit the mapper."""
    if answer != "head":
        return
    folder = label_head or project / "models" / "label_head"
    if not folder.is_dir():
        raise A2IError(f"{folder}: no label head, and layers.answer is head: run `dvc repro label_head`, pass "
                       "--label-head DIR, or set layers.answer: nnls")
    generator.load_head(folder)


def _audio_encoder_dir(models: Path) -> Path:
    """models/audio_encoder, or models/vggish in a project built before the folder was renamed (until it reruns)."""
    folder, old = models / "audio_encoder", models / "vggish"
    if not folder.exists() and old.is_dir():
        log.warning("%s: not found; using %s, its name before a2i 0.2 (dvc repro makes the new one)", folder, old)
        return old
    return folder


Project = Annotated[Path, typer.Option(help="A project or workspace whose models/ and params.yaml to use.")]
MapperDir = Annotated[Path | None, typer.Option(
    help="Trained mapper: a folder, or a Hugging Face Hub id owner/name[@revision] (a folder of that name wins) "
         "[default: PROJECT/models/mapper].")]
AudioEncoderDir = Annotated[Path | None, typer.Option(
    "--audio-encoder", "--vggish",
    help="The audio encoder the mapper was trained with: VGGish, CLAP or AST (audio_encoder stage output); --vggish "
         "is its old name, kept until a2i 0.3 [default: PROJECT/models/audio_encoder].")]
Sd3Dir = Annotated[Path | None, typer.Option(help="SD3 (encoders stage output) [default: PROJECT/models/sd3].")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps; auto takes a GPU when there is one, "
                                          "else the CPU.")]
DType = Annotated[str, typer.Option(help="auto (bfloat16 on a GPU, float32 on the CPU), float32, float16 or bfloat16 "
                                         "(the CPU always computes in float32).")]
LabelHeadDir = Annotated[Path | None, typer.Option(
    help="The label head that finds the sounds a clip holds (label_head stage output) [default: "
         "PROJECT/models/label_head, when there is one].")]
Fill = Annotated[Literal["empty_prompt", "zeros", "nearest_prompts"] | None, typer.Option(
    help="What fills the sequence positions the mapper does not predict: the empty prompt's sequence, zeros, or a "
         "mix of the nearest prompts' sequences (render.nearest_k, render.nearest_temperature) "
         "[default: the project's render.sequence_fill].")]


@app.command()
def generate(
    audio: Annotated[list[Path], typer.Argument(help="Audio files or directories of them: any format ffmpeg reads.")],
    out: Annotated[Path, typer.Option(help="Where the PNGs go (a directory's files keep their path inside it).")],
    project: Project = Path("."),
    mapper: MapperDir = None,
    audio_encoder: AudioEncoderDir = None,
    sd3: Sd3Dir = None,
    seed: Annotated[int | None, typer.Option(
        help="Noise seed of each sound's first image (the next ones take the next seeds) "
             "[default: the project's render.seed].")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Denoising steps [default: the project's render.steps].")] = None,
    guidance: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale [default: the project's render.guidance].")] = None,
    size: Annotated[int | None, typer.Option(
        help="Image width and height in pixels, a multiple of 16 [default: the project's render.size].")] = None,
    images_per_sound: Annotated[int, typer.Option(min=1, help="Images of each sound, each with its own seed.")] = 1,
    batch_size: Annotated[int | None, typer.Option(
        help="Images rendered at once [default: the project's render.batch_size].")] = None,
    sequence_fill: Fill = None,
    max_seconds: Annotated[float | None, typer.Option(
        help="Each recording is heard up to here, with a note when it is longer (a header can claim days of audio) "
             "[default: the project's generate.max_seconds].")] = None,
    layers: Annotated[Literal["regions", "joint"] | None, typer.Option(
        help="Draw each sound a clip holds as its own layer: regions (each denoised under its own sound, blended "
             "every step) or joint (one text sequence holding each sound's) [default: off, one embedding].")] = None,
    layout: Annotated[Literal["score", "grid", "stereo"] | None, typer.Option(
        help="With --layers: where each sound's region goes: left to right by score, a grid, or where the "
             "channels place it [default: the project's layers.layout].")] = None,
    label_head: LabelHeadDir = None,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Turn sounds into images with a trained mapper (decode, embed, map, render).

    A file that cannot be read or heard is reported and skipped; the others are rendered; the exit status is 1 if
    any failed.
    """
    setup_logging()
    from a2i_core.diffusion.fills import SequenceFill
    from a2i_core.diffusion.images import save_image
    from a2i_core.diffusion.render import RenderSettings
    from a2i_core.layers.draw import record
    from a2i_core.serve.generate import expand_inputs, image_seeds, output_names
    from a2i_core.serve.results import settings_used

    try:
        if layout is not None and layers is None:
            raise A2IError("--layout places layers: give --layers regions or --layers joint with it")
        params = _project_params(project, "generate", optional=("layers",) if layers else ())
        render_params = _with_options(params.render, seed=seed, steps=steps, guidance=guidance, size=size,
                                      batch_size=batch_size, sequence_fill=sequence_fill)
        generate_params = _with_options(params.generate, max_seconds=max_seconds)
        layering = _layering(params.layers, layers, layout, render_params.size) if layers else None
        fill = SequenceFill.from_params(render_params)
        _check_runtime(device, dtype)
        inputs, problems = expand_inputs(list(audio))
        if not inputs:
            raise A2IError("; ".join(problems) or "no audio files given")
        generator = _load_generator(project, mapper, audio_encoder, sd3, device, dtype, generate_params.max_seconds)
        fill.check(generator.artifact.prompt_sequences)
        if layering is not None:
            _load_head(generator, project, label_head, layering.answer)
    except A2IError as err:
        _echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for problem in problems:
        _echo(f"error: {problem}", err=True)
    settings = RenderSettings.from_params(render_params)
    seeds = image_seeds(settings.seed, images_per_sound)  # each sound's, as SoundToImage.render gives them
    names = output_names([name for _, name in inputs], images_per_sound)
    failed, written, seconds = len(problems), 0, 0.0
    pending: list[tuple[Sound, list[str]]] = []

    def flush() -> None:
        nonlocal written, seconds, failed
        if not pending:
            return
        saved = 0
        try:
            batch_seconds = generator.render([s for s, _ in pending], settings, images_per_sound, fill, layering)
            seconds += batch_seconds
            used = settings_used(settings, images_per_sound, fill, generator.device, batch_seconds)
            for sound, files in pending:
                own = used if layering is None else {**used, "layering": record(sound.layers, layering)}
                for image, name, seed in zip(sound.images, files, seeds, strict=True):
                    save_image(image, out / name, own, seed)  # atomic: a kill never leaves a half-written PNG
                    written += 1
                saved += 1
        except (RuntimeError, OSError) as err:  # out of GPU memory, a full disk, --out not a directory
            first = first_line(err, limit=500)
            lost = [str(s.path) for s, _ in pending[saved:]]
            _echo(f"error: rendering {', '.join(lost)}: {first}", err=True)
            failed += len(lost)
        for sound, _ in pending:
            sound.images.clear()
        pending.clear()

    for (path, _), files in zip(inputs, names, strict=True):
        try:
            sound = generator.sound(path, layering)
        except A2IError as err:
            _echo(f"error: {err}", err=True)
            failed += 1
            continue
        for note in sound.notes:
            _echo(f"note: {path}: {note}", err=True)
        _echo(f"{path.name}: " + ", ".join(f"{p!r} {s:.3f}" for p, s in sound.nearest))
        if layering is not None:
            _echo(f"{path.name}: layers " + "; ".join(
                f"{layer.label!r} {layer.score:.2f} at x {layer.x:.2f}" for layer in sound.layers))
        pending.append((sound, files))
        if len(pending) * images_per_sound >= settings.batch_size:
            flush()
    flush()
    _echo(f"{written} images in {out} ({seconds:.1f} s rendering)" if written else "no images written")
    if failed:
        _echo(f"error: {failed} of {len(inputs) + len(problems)} inputs failed (see above)", err=True)
        raise typer.Exit(1)


@app.command()
def timeline(
    audio: Annotated[Path, typer.Argument(help="A recording of any length: any format ffmpeg reads (a video's audio "
                                               "track is taken).")],
    out: Annotated[Path, typer.Option(help="Where timeline.csv, timeline.vtt, keyframes/, storyboard.png and "
                                           "film.mp4 go.")],
    project: Project = Path("."),
    mapper: MapperDir = None,
    audio_encoder: AudioEncoderDir = None,
    sd3: Sd3Dir = None,
    film: Annotated[bool, typer.Option(help="Also draw the film (a frame every 1/fps s, the audio muxed in).")] = True,
    fps: Annotated[float | None, typer.Option(
        help="The film's frames per second [default: the project's timeline.fps].")] = None,
    seed: Annotated[int | None, typer.Option(
        help="The noise every keyframe and frame starts from [default: the project's render.seed].")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps [default: render.steps].")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale [default: render.guidance].")] = None,
    size: Annotated[int | None, typer.Option(help="Image side in pixels [default: render.size].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images rendered at once [default: render.batch_size].")
                          ] = None,
    sequence_fill: Fill = None,
    max_seconds: Annotated[float | None, typer.Option(
        help="The recording is heard up to here [default: the project's generate.max_seconds].")] = None,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """A recording over time: its events (labelled window by window, smoothed), a keyframe per event, and a film.

    The film's frames are kept in OUT/film.mp4.frames until it is whole: run the same command again after an
    interruption and only the missing frames are drawn.
    """
    setup_logging()
    from a2i_core.core.audio_io import not_a_file
    from a2i_core.diffusion.fills import SequenceFill
    from a2i_core.diffusion.render import RenderSettings
    from a2i_core.serve.results import render_settings
    from a2i_core.timeline.make import check_claimed_length, make_timeline
    from a2i_core.timeline.storyboard import caption

    try:
        params = _project_params(project, "timeline", (*SERVING_SECTIONS, "timeline"))
        render_params = _with_options(params.render, seed=seed, steps=steps, guidance=guidance, size=size,
                                      batch_size=batch_size, sequence_fill=sequence_fill)
        cfg = _with_options(params.timeline, fps=fps)
        generate_params = _with_options(params.generate, max_seconds=max_seconds)
        fill = SequenceFill.from_params(render_params)
        _check_runtime(device, dtype)
        problem = not_a_file(audio)
        if problem is not None:
            raise A2IError(f"{audio}: {problem}")
        if film:
            check_claimed_length(audio, cfg, generate_params.max_seconds)
        engine = _load_generator(project, mapper, audio_encoder, sd3, device, dtype, generate_params.max_seconds)
        fill.check(engine.artifact.prompt_sequences)
        settings = RenderSettings.from_params(render_params)
        used = {**render_settings(settings, fill, engine.device), "source": audio.name}
        made = make_timeline(engine, audio, out, cfg, settings, fill, film=film, used=used)
    except (A2IError, OSError) as err:  # OSError: --out not a directory, a full disk (frames made are kept)
        _echo(f"error: {first_line(err, limit=500) if isinstance(err, OSError) else err}", err=True)
        raise typer.Exit(1) from None
    for note in made.notes:
        _echo(f"note: {audio}: {note}", err=True)
    for event in made.labelled:
        times, label = caption(event)
        _echo(f"{times}  {label}")
    _echo(f"{len(made.labelled)} events in {made.seconds:.1f} s: {out / 'timeline.csv'}, timeline.vtt"
          + (", storyboard.png" if made.storyboard else "") + (", film.mp4" if made.film else ""))


MAX_EXAMPLES_FIELD = "{max_examples}"  # in a help text: serve.examples' MAX_EXAMPLES, filled in by _AppCommand


class _AppCommand(typer.core.TyperCommand):
    """`a2i app`, whose help names the examples' limit: it lives beside the examples' code, which loads torch and
    PyArrow, so it is read only when the help is shown, and every other start of the CLI goes without them."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from a2i_core.serve.examples import MAX_EXAMPLES

        for param in self.params:
            text = getattr(param, "help", None)
            if text:
                param.help = text.replace(MAX_EXAMPLES_FIELD, str(MAX_EXAMPLES))
        super().format_help(ctx, formatter)


@app.command(name="app", cls=_AppCommand)
def web_app(
    project: Project = Path("."),
    mapper: MapperDir = None,
    audio_encoder: AudioEncoderDir = None,
    sd3: Sd3Dir = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (beyond 127.0.0.1, others can reach it).")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    max_upload_mb: Annotated[float, typer.Option(min=0.1, help="Largest upload accepted.")] = 50.0,
    max_minutes: Annotated[float, typer.Option(min=0.01, help="Longest sound accepted.")] = 10.0,
    auth: Annotated[str | None, typer.Option(help="USER:PASSWORD that the page asks for [default: no login].")] = None,
    examples: Annotated[Path | None, typer.Option(
        help=f"A folder of your own sounds to offer as examples: its first {MAX_EXAMPLES_FIELD} audio files by name "
             "that can be heard, any format ffmpeg reads [default: one clip per class from the project's test split, "
             "when its data is there and --host is this machine only].")] = None,
    no_examples: Annotated[bool, typer.Option(
        "--no-examples", help="Offer no example sounds: the project's clips stay off a shared page "
                              "[default: examples are offered].")] = False,
    sequence_fill: Fill = None,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Start the web app: upload, record or pick an example sound, get images, their nearest prompts and a download;
    or, in its Over time tab, a recording's events, a keyframe for each and a film."""
    setup_logging()
    from a2i_core.diffusion.fills import SequenceFill
    from a2i_core.diffusion.render import RenderSettings
    from a2i_core.serve.app import serve
    from a2i_core.serve.guards import parse_auth

    try:
        _check_runtime(device, dtype)
        credentials = parse_auth(auth) if auth is not None else None
        make_examples = _example_maker(project, examples, no_examples, host)
        # None: no "Over time" tab, no layers
        params = _project_params(project, "the app", optional=("timeline", "layers"))
        render_params = _with_options(params.render, sequence_fill=sequence_fill)
        fill = SequenceFill.from_params(render_params)
        generator = _load_generator(project, mapper, audio_encoder, sd3, device, dtype, params.generate.max_seconds)
        fill.check(generator.artifact.prompt_sequences)
        layers = params.layers
        if layers is not None:
            try:
                _load_head(generator, project, None, layers.answer)
            except A2IError as err:  # the app still makes single images
                _echo(f"note: {err}; the app offers no layers", err=True)
                layers = None
    except A2IError as err:
        _echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    serve(generator, RenderSettings.from_params(render_params), fill, host=host, port=port,
          max_upload_mb=max_upload_mb, max_minutes=max_minutes, auth=credentials, examples=make_examples,
          timeline=params.timeline, layers=layers)


def _example_maker(project: Path, folder: Path | None, none: bool, host: str = "127.0.0.1") -> ExampleMaker | None:
    """What writes the app's example sounds at start (see a2i_core.serve.examples); None for none. Checked before the
    models load, so a mistyped folder costs no wait. The project's own clips only on the loopback: a ``host`` that
    other machines reach gets them only as an explicit --examples DIR (the project's data may be private)."""
    from a2i_core.serve.examples import folder_examples, project_examples
    from a2i_core.serve.guards import is_loopback

    if folder is not None and none:
        raise A2IError("--examples and --no-examples: give one or the other")
    if none:
        return None
    if folder is None:
        if not is_loopback(host):
            log.info("no example sounds: the project's own clips are not offered on --host %s, which other machines "
                     "can reach (its data may be private); offer sounds with --examples DIR", host)
            return None
        data = project / "data"  # where the pipeline's ingest and download stages leave them (dvc.yaml)
        return functools.partial(project_examples, data / "candidates.parquet", data / "audio")
    if not folder.is_dir():
        raise A2IError(f"--examples {folder}: not a folder")
    return functools.partial(folder_examples, folder)


if __name__ == "__main__":
    app()
