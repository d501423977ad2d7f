"""The web app: upload, record or pick an example sound, get images (one per seed), the nearest prompts and the
settings used, and download the images as PNGs (Gradio); in its second tab, a recording over time: its events, a
keyframe for each (the storyboard) and a film with the sound, to play and download.

Meant to be left running for other people, so it defends itself: uploads are capped in size and duration,
each upload is deleted once its request is done or refused (the page's sound once the page replaces it, or leaves
it unused for ten minutes: the page keeps it for another try), a request may name no file outside the app's own
folder, all of Gradio's files (uploads, examples, results, downloads) live in a private directory removed when the
server stops, one generation runs at a time, failed logins slow down, and the browser and the console only ever see
one short line per error or refusal. The checks are :mod:`a2i_core.serve.guards`, the uploads' lifetime
:mod:`a2i_core.serve.uploads`, the files handed back :mod:`a2i_core.serve.results`, what the tabs share
:mod:`a2i_core.serve.page`, the second tab :mod:`a2i_core.serve.timeline_tab`; this module is the page.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.params import MAX_SEED, LayersParams, TimelineParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.layers.draw import record
from a2i_core.serve.examples import Example, ExampleMaker
from a2i_core.serve.generate import SoundToImage, image_seeds
from a2i_core.serve.guards import (
    FAILED,
    LOGIN_NOTE,
    MALFORMED,
    MAX_IMAGES,
    MB,
    NOT_AN_UPLOAD,
    LoginThrottle,
    LogRefusedFiles,
    SoundRefused,
    ThrottleLogins,
    check_sound,
    exposure_warning,
    image_count,
    shown,
    user_line,
)
from a2i_core.serve.page import GENERATOR_LOCK, SWEEP_S, kept_note, let_go, status_line
from a2i_core.serve.results import save_results, settings_used
from a2i_core.serve.timeline_tab import SettingsRefused, TimelineWork, over_time_tab
from a2i_core.serve.uploads import CountUploads, UploadCounter, delete_upload, renew, request_files, within

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine

log = logging.getLogger(__name__)

MAX_QUEUE = 32  # requests waiting for the one generation slot


def build_app(generator: SoundToImage, defaults: RenderSettings, fill: SequenceFill, max_upload_mb: float = 50,
              max_minutes: float = 10, uploads: UploadCounter | None = None, examples: Sequence[Example] = (),
              timeline: TimelineParams | None = None, layers: LayersParams | None = None):
    """The Gradio Blocks; ``serve`` launches it with the matching size limit, auth, upload counting, a private
    temp dir and the example sounds it wrote there. The first tab makes images of a sound; with ``layers``
    (params.yaml's section), it can draw each sound a clip holds as its own layer. With ``timeline``, a second tab,
    Over time, makes a recording's timeline, storyboard and film (:func:`_over_time_tab`).

    Two events do the same work. The page's Generate keeps its sound for the next try (another seed, say) and
    shows a refusal as one line in its status, the last good result left in place. ``/run``, for API clients,
    deletes the request's upload once it is done (a client sends its file with each call) and answers a refusal
    with an error event.
    """
    import gradio as gr

    kept: set[str] = set()  # the example sounds' server files: the app's own, for every visitor, never deleted
    no_sound = f"Upload or record a sound{', or pick an example,' if examples else ''} first."

    def release(path: Path) -> None:
        # The sound is the user's, not ours to keep: gone once no request or page needs it.
        if (uploads is None or uploads.release(path)) and os.path.realpath(path) not in kept:
            delete_upload(path, Path(app.GRADIO_CACHE))

    def make(path: Path, steps: int, guidance: float, seed: int, size: int, images: int, mode: str = "off",
             layout: str | None = None):
        """One request's gallery, nearest prompts, settings used and download. SoundRefused (the visitor's line)
        when this sound or request cannot be used, SettingsRefused when its layers cannot (the sound may be fine);
        gr.Error(FAILED) when the work failed for another reason."""
        try:
            count = image_count(images)
            check_sound(path, max_upload_mb, max_minutes)
            settings = RenderSettings(int(steps), float(guidance), int(size), int(seed),
                                      batch_size=min(count, defaults.batch_size))
            layering = _layering(layers, mode, layout, settings.size)
            with GENERATOR_LOCK:
                (sound,) = generator.sounds([path], layering)
                seconds = generator.render([sound], settings, images_per_sound=count, fill=fill, layering=layering)
        except (SoundRefused, SettingsRefused) as err:
            log.info("refused %r: %s", path.name, err)
            raise
        except A2IError as err:  # the generator's own verdict on this sound (too short, say)
            log.info("refused %r: %s", path.name, err)
            raise SoundRefused(user_line(err, path)) from None
        except Exception as err:  # the browser gets one line, the console one line, never a trace
            log.error("generation failed for %r: %s: %s", path.name, type(err).__name__, err)
            raise gr.Error(FAILED, print_exception=False) from None
        nearest = [[prompt, round(score, 4)] for prompt, score in sound.nearest]
        seeds = image_seeds(settings.seed, count)  # `a2i generate --images-per-sound`'s rule
        used = settings_used(settings, count, fill, generator.device, seconds)
        if layering is not None:
            used["layering"] = record(sound.layers, layering)
        try:
            gallery, download = save_results(sound, seeds, Path(app.GRADIO_CACHE), used)
        except OSError as err:  # a full disk, say
            log.error("saving the images of %r failed: %s", path.name, first_line(err))
            raise gr.Error(FAILED, print_exception=False) from None
        return gallery, nearest, used, download

    def run(audio: str | None, steps: int, guidance: float, seed: int, size: int, images: int):
        if not audio:
            raise gr.Error(no_sound, print_exception=False)
        path = Path(audio)
        try:
            gallery, nearest, used, download = make(path, steps, guidance, seed, size, images)
        except SoundRefused as err:
            raise gr.Error(str(err), print_exception=False) from None
        finally:
            release(path)
        return gallery, nearest, used, None, download  # None: the sound input is cleared, as its file is gone

    def generate(audio: str | None, steps: int, guidance: float, seed: int, size: int, images: int, mode: str,
                 layout: str, held: str | None):
        # `held` is the sound this page kept after its last request (server-side state: a client cannot name it).
        path = Path(audio) if audio else None
        let_go(held, path, release)
        unchanged = (gr.skip(),) * 4  # a refusal leaves the last good result on screen
        if path is None:
            return *unchanged, status_line(gr, no_sound), gr.skip(), None
        try:
            results = make(path, steps, guidance, seed, size, images, mode, layout)
        except SoundRefused as err:  # this sound cannot be used: deleted, and the input cleared to match
            release(path)
            return *unchanged, status_line(gr, str(err)), None, None
        except SettingsRefused as err:  # the sound may be fine: kept for another try (a larger size, say)
            return *unchanged, status_line(gr, str(err)), gr.skip(), str(path)
        except gr.Error as err:  # the sound may be fine: kept for another try
            return *unchanged, status_line(gr, str(err.message)), gr.skip(), str(path)
        renew(path, Path(app.GRADIO_CACHE))
        return *results, status_line(gr, None), gr.skip(), str(path)

    with gr.Blocks(title="a2i: sound to image", delete_cache=(SWEEP_S, SWEEP_S)) as app:
        gr.Markdown("# a2i — turn a sound into an image\nA frozen Stable Diffusion 3, steered by your audio.")
        # Gradio calls delete_callback when it drops a session's state (an hour after its tab closed).
        held = gr.State(None, delete_callback=lambda path: path and release(Path(path)))
        with gr.Tabs():
            with gr.Tab("One image", id="one-image"), gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Sound",
                                     elem_id="sound")
                    if examples:
                        kept.update(_examples(gr, examples, audio))
                    gr.Markdown(kept_note(max_upload_mb, max_minutes, "sound"))
                    steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
                    guidance = gr.Slider(0, 15, value=defaults.guidance, step=0.5, label="Guidance")
                    seed = gr.Number(value=defaults.seed, precision=0, label="Seed", minimum=0, maximum=MAX_SEED,
                                     info="Image k of the sound takes seed + k.")
                    images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images")
                    size = gr.Dropdown([64, 128, 256, 512, 768, 1024], value=defaults.size, label="Size")
                    with gr.Row(visible=layers is not None):
                        mode = gr.Dropdown(["off", *LAYER_MODES], value="off", label="Layers", elem_id="layers",
                                           info="Each sound the clip holds drawn as its own layer.")
                        layout = gr.Dropdown(list(LAYOUTS), value=layers.layout if layers else "score",
                                             label="Layout", elem_id="layout",
                                             info="Left to right by score, a grid, or where the channels place it.")
                    button = gr.Button("Generate", variant="primary")
                    status = gr.Markdown(visible=False, elem_id="status")  # the one place a refusal is shown
                with gr.Column():
                    # No "download all" of Gradio's own: the button below is the one download of them all.
                    gallery = gr.Gallery(label="Result", elem_id="result", columns=2, object_fit="contain",
                                         height="auto", interactive=False, buttons=["download", "fullscreen"])
                    download = gr.DownloadButton("Download PNGs (zip)", elem_id="download", size="md")
                    nearest = gr.Dataframe(headers=["nearest prompt", "cosine"], label="Nearest prompts",
                                           elem_id="nearest")
                    used = gr.JSON(label="Settings used", elem_id="settings")
            if timeline is not None:
                with gr.Tab("Over time", id="over-time"):
                    over_time_tab(gr, TimelineWork(generator, defaults, fill, timeline, max_upload_mb, max_minutes,
                                                     lambda: Path(app.GRADIO_CACHE)), release, no_sound)
        controls = [steps, guidance, seed, size, images]
        # Explicit, not Gradio's default: GRADIO_DEFAULT_CONCURRENCY_LIMIT must not be able to raise it. One
        # concurrency_id: the page and the API share the one generation slot.
        # An event that raises marks every output "Error" and hides what it showed: the page's never raises, and
        # shows its progress on the gallery alone.
        button.click(generate, [audio, *controls, mode, layout, held],
                     [gallery, nearest, used, download, status, audio, held],
                     api_name="generate", api_visibility="private", concurrency_limit=1, concurrency_id="generate",
                     show_progress_on=[gallery])
        # Not on the page: API clients' /run, unchanged (outputs, errors) from before the page kept its sound.
        gr.Button(visible=False).click(run, [audio, *controls], [gallery, nearest, used, audio, download],
                                       api_name="run", concurrency_limit=1, concurrency_id="generate")
    # Beyond max_size a request is told to come back later. api_open=False closes Gradio's direct REST route, which
    # would run requests beside the queue and so past its limit; the page and gradio_client go through the queue.
    app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE, api_open=False)
    _refuse_bad_inputs(app, gr, release)
    return app


LAYER_MODES = ("regions", "joint")
LAYOUTS = ("score", "grid", "stereo")


def _layering(layers: LayersParams | None, mode: str, layout: str | None, size: int) -> LayersParams | None:
    """The page's layering: params' section with the page's mode and layout, or None (off). SettingsRefused, in the
    visitor's words, for a value the page does not offer (a hand-made request) or more layers than the size holds:
    the page's sizes start below what params' layers need, and a visitor who picks one keeps the sound."""
    if mode == "off" or layers is None:
        return None
    if mode not in LAYER_MODES or layout not in LAYOUTS:
        raise SettingsRefused(f"Layers must be off, {' or '.join(LAYER_MODES)}, and the layout {', '.join(LAYOUTS)}.")
    problem = layers.room_problem(size, "an image of")
    if problem is not None:
        raise SettingsRefused(f"{problem[0].upper()}{problem[1:]}: choose a larger size.")
    return dataclasses.replace(layers, mode=mode, layout=layout)


def _refuse_bad_inputs(app, gr, release: Callable[[Path], None]) -> None:
    """Check each request's inputs before Gradio reads them, and make whatever Gradio refuses one line each way.

    Gradio fetches a URL named as a file before it checks anything, and prints a 20- to 40-line traceback for every
    input it refuses (a path outside its folders, a malformed payload, a number past a slider's end), so any client
    could flood the console; the request's upload then stayed on disk until the sweep,
    since ``run``, which deletes it, never started. Here a file outside the app's folder is refused before Gradio
    sees it, every refusal is one console line and one line for the visitor, and the request's uploads are released
    at once, as ``run`` would have released them.
    """
    preprocess = app.preprocess_data  # Gradio's step from the request's JSON to run's arguments

    async def guarded(block_fn, inputs, *args, **kwargs):
        root = Path(app.GRADIO_CACHE)
        files = request_files(inputs)
        foreign = [path for path in files if within(path, root) is None]
        route = f"/{getattr(block_fn, 'api_name', None) or '?'}"
        if foreign:
            log.warning("refused a request to %s: a file outside the app's folder: %s", route, shown(foreign[0]))
            message = NOT_AN_UPLOAD
        else:
            try:
                return await preprocess(block_fn, inputs, *args, **kwargs)
            except gr.Error as err:  # Gradio's own verdict on an input: the visitor sees it, as before
                message = str(err.message)
                log.info("refused a request to %s: %s", route, shown(message))
            except Exception as err:
                log.warning("refused a request to %s: %s: %s", route, type(err).__name__, shown(first_line(err)))
                message = MALFORMED
        # Once per file: a request naming its upload twice must not release another request's upload of it.
        for path in {within(path, root) for path in files} - {None}:
            release(path)
        raise gr.Error(message, print_exception=False)

    app.preprocess_data = guarded


def _examples(gr, examples: Sequence[Example], audio) -> set[str]:
    """The clickable example sounds under the audio input (a click only fills the input); returns the real paths of
    the files the page serves for them."""
    before = set(audio.temp_files)
    gr.Examples([[str(e.path)] for e in examples], inputs=[audio], label="Example sounds", elem_id="examples",
                example_labels=[e.label for e in examples], examples_per_page=len(examples), cache_examples=False)
    # Gradio files each example under the input component (a copy in its cache, unless serve wrote it there already)
    # but, for audio, does not exempt it from its own sweep (delete_cache): without this, every example would vanish
    # ten minutes after the start, and a click would then hand the generator a missing file.
    served = set(audio.temp_files) - before
    audio.keep_in_cache.update(served)
    return {os.path.realpath(p) for p in served | {str(e.path) for e in examples}}


def _make_examples(make: ExampleMaker | None, temp_dir: Path) -> list[Example]:
    if make is None:
        return []
    try:
        return list(make(temp_dir / "examples"))
    except Exception as err:  # examples are never a reason for the app not to start (a folder gone since, a bug)
        log.warning("no example sounds: %s", first_line(err, limit=300) if isinstance(err, A2IError)
                    else f"{type(err).__name__}: {first_line(err, limit=300)}")
        return []


def serve(generator: SoundToImage, defaults: RenderSettings, fill: SequenceFill, host: str, port: int,
          max_upload_mb: float = 50, max_minutes: float = 10, auth: tuple[str, str] | None = None,
          examples: ExampleMaker | None = None, timeline: TimelineParams | None = None,
          layers: LayersParams | None = None) -> None:
    """Run the app until Ctrl-C or SIGTERM; every file Gradio wrote (uploads, examples, results, downloads) is
    removed on the way out. With ``auth``, a client's failed logins make it wait before its next try (see
    :class:`~a2i_core.serve.guards.LoginThrottle`). ``examples`` writes the page's example sounds into the app's
    private temp dir at start (``functools.partial(project_examples, candidates, audio)``, say); none when it finds
    none. With ``timeline`` (params' section), the page has its Over time tab."""
    from starlette.middleware import Middleware

    if not max_upload_mb > 0 or not max_minutes > 0:
        raise A2IError(f"the upload limits must be positive (got {max_upload_mb:g} MB, {max_minutes:g} minutes)")
    warning = exposure_warning(host, auth)
    if warning:
        log.warning(warning)
    temp_dir = tempfile.mkdtemp(prefix="a2i-app-")
    # Gradio reads GRADIO_TEMP_DIR when each component and the server are created: set it before build_app, so
    # nothing of this server lands in the shared /tmp/gradio where it would outlive us.
    previous_temp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = temp_dir
    stop = threading.Event()
    previous_handlers: dict[int, object] = {}
    try:
        uploads = UploadCounter()
        app = build_app(generator, defaults, fill, max_upload_mb=max_upload_mb, max_minutes=max_minutes,
                        uploads=uploads, examples=_make_examples(examples, Path(temp_dir)), timeline=timeline,
                        layers=layers)
        middleware = [Middleware(LogRefusedFiles), Middleware(CountUploads, counter=uploads)]
        if auth is not None:
            middleware.insert(0, Middleware(ThrottleLogins, throttle=LoginThrottle()))
        app.launch(server_name=host, server_port=port, share=False, show_error=False, auth=auth,
                   auth_message=LOGIN_NOTE if auth is not None else None, max_file_size=int(max_upload_mb * MB),
                   prevent_thread_lock=True, app_kwargs={"middleware": middleware})
        try:
            if threading.current_thread() is threading.main_thread():
                # SIGTERM's default kills the process on the spot, skipping the cleanup below.
                for signum in (signal.SIGTERM, signal.SIGHUP):
                    previous_handlers[signum] = signal.signal(signum, lambda *_: stop.set())
            while app.is_running and not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            app.close(verbose=False)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        if previous_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous_temp
        shutil.rmtree(temp_dir, ignore_errors=True)
        log.info("stopped; removed the app's temporary files (%s)", temp_dir)
