"""The web app: upload, record or pick an example sound, get images (one per seed), the nearest prompts and the
settings used, and download the images as PNGs (Gradio).

Meant to be left running for other people, so it defends itself: uploads are capped in size and duration,
each upload is deleted once its request is done, all of Gradio's files (uploads, examples, results, downloads) live
in a private directory removed when the server stops, one generation runs at a time, and the browser only ever sees
one short line per error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from a2i_core.core.audio_io import SAMPLE_RATE, AudioError, decode_stream
from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.names import safe_name
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.images import save_png
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.examples import Example, ExampleMaker
from a2i_core.serve.generate import SILENCE_RMS, Sound, SoundToImage, image_seeds

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine

log = logging.getLogger(__name__)
MB = 1024 * 1024  # Gradio's own unit for max_file_size, so both limits agree to the byte
DURATION_SLACK_S = 0.5  # encoders pad a few frames: a file cut at exactly the limit must still pass

# SoundToImage shares torch modules, a scheduler and CPU threads between calls, so two concurrent renders
# corrupt each other (measured: wrong images handed to the wrong request). One lock per process, whatever the
# server's concurrency settings, on top of the event's concurrency_limit=1.
_GENERATOR_LOCK = threading.Lock()
# Saving a result also removes earlier, empty result folders: never one another request is still filling. The event's
# concurrency_limit=1 does not promise that: Gradio's REST route (/gradio_api/run/run, open unless api_open=False)
# calls the function outside the queue.
_RESULTS_LOCK = threading.Lock()

MAX_QUEUE = 32  # requests waiting for the one generation slot
MAX_IMAGES = 4  # per request: each is a full render, and one request holds the only generation slot
UNREADABLE = "That file could not be read as audio."
GONE = "The sound is no longer on the server: upload or record it again."
SILENT = "The sound is silent: there is nothing to hear."
FAILED = "The image could not be made from this sound."


class SoundRefused(A2IError):
    """An upload the app will not process; the message is the one line the user sees."""


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` (the password may contain ':') to a (user, password) pair; A2IError on a bad value."""
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        # Never echo the value: it may be a real password with a typo.
        raise A2IError("--auth takes USER:PASSWORD, both non-empty")
    return user.strip(), password


def check_sound(path: str | Path, max_upload_mb: float = 50, max_minutes: float = 10) -> float:
    """Refuse a file over the size or duration limit, unreadable or silent; return its duration in seconds.

    The size is read from the file system; the duration by decoding at most the limit plus a little (ffmpeg
    stops there), so a very long recording costs at most a limit's worth of work and memory. Containers' own
    duration fields are not trusted: they are often missing (streamed recordings) and can lie.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SoundRefused(GONE) from None
    if size > max_upload_mb * MB:
        raise SoundRefused(f"The file is larger than the {max_upload_mb:g} MB limit.")
    max_seconds = max_minutes * 60
    limit = int((max_seconds + 2 * DURATION_SLACK_S) * SAMPLE_RATE)
    samples, energy = 0, 0.0
    try:
        with contextlib.closing(decode_stream(path)) as chunks:  # closing early stops ffmpeg
            for chunk in chunks:  # (n,) float32
                samples += chunk.size
                energy += float(np.dot(chunk.astype(np.float64), chunk))
                if samples > limit:
                    break
    except AudioError:
        raise SoundRefused(UNREADABLE) from None
    seconds = samples / SAMPLE_RATE
    if seconds > max_seconds + DURATION_SLACK_S:
        raise SoundRefused(f"The sound is longer than the {max_minutes:g}-minute limit.")
    if np.sqrt(energy / samples) < SILENCE_RMS:
        raise SoundRefused(SILENT)
    return seconds


def _user_line(err: A2IError, path: Path) -> str:
    """The generator's message about this file, without the server path; a fixed line when it is about more."""
    text = str(err)
    prefix = f"{path}: "
    reason = text[len(prefix):] if text.startswith(prefix) else ""
    if not reason or "/" in reason or "\\" in reason or "\n" in reason:
        return FAILED
    return f"{reason[0].upper()}{reason[1:].rstrip('.')}."


class UploadCounter:
    """How many uploads of each server file are still waiting for their request.

    Gradio files an upload under the hash of its bytes, so two uploads of the same sound (the same file sent with
    two seeds at once, say) share one path: the first request to finish must not delete what the other still
    needs. ``serve`` counts uploads as they arrive (an ASGI middleware on the upload route); a request deletes its
    file only when it was the last one waiting. Without a counter (``build_app`` alone), each request deletes its
    file, if in the upload folder, at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, int] = {}

    def uploaded(self, paths: list[str]) -> None:
        with self._lock:
            for path in paths:
                key = os.path.realpath(path)
                self._waiting[key] = self._waiting.get(key, 0) + 1

    def release(self, path: str | Path) -> bool:
        """One request is done with ``path``: True when it was uploaded and no other upload of it is waiting (delete
        it now). False for a path no upload gave, such as another request's result sent back through the API."""
        key = os.path.realpath(path)
        with self._lock:
            waiting = self._waiting.pop(key, 0)
            if waiting > 1:
                self._waiting[key] = waiting - 1
            return waiting == 1


class _CountUploads:
    """ASGI middleware: feeds the paths Gradio's upload route answers with to an UploadCounter."""

    def __init__(self, app, counter: UploadCounter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        status, body = 0, bytearray()

        async def capture(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if status == 200:
            # Anything unexpected only loses the count: that file then stays until the server stops.
            with contextlib.suppress(ValueError, TypeError):
                paths = json.loads(body)
                self.counter.uploaded([p for p in paths if isinstance(p, str)])


def _delete_upload(path: Path, upload_root: Path) -> None:
    """Remove an uploaded file and its per-upload folder; never anything outside Gradio's upload folder."""
    with contextlib.suppress(OSError):
        path = path.resolve()
        root = upload_root.resolve()
        if root not in path.parents:
            return
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root:
            parent.rmdir()  # OSError (and stop) when it still holds something
            parent = parent.parent


def _image_count(value: object) -> int:
    """The Images slider's value, checked again here: an API client can send any number."""
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        count = 0
    if count != value or not 1 <= count <= MAX_IMAGES:
        raise SoundRefused(f"Images must be a whole number from 1 to {MAX_IMAGES}.")
    return count


def _save_results(sound: Sound, seeds: list[int], root: Path, used: dict) -> tuple[list[tuple[str, str]], str]:
    """Each image as a PNG (the settings and its seed in the PNG's text) and all of them in one zip, in a new folder
    of Gradio's cache; returns the gallery's (path, caption) pairs and the zip's path.

    Written where Gradio keeps its own results, so Gradio serves them without a copy, tracks them like its own, and
    its sweep (``delete_cache``) and the server's exit remove them with the rest. The sweep deletes files only: the
    earlier result folders it emptied are removed here.
    """
    with _RESULTS_LOCK:
        _remove_empty_results(root)
        out = Path(tempfile.mkdtemp(prefix="result-", dir=root))
        stem = safe_name(sound.path.stem)
        try:
            pngs = []
            for image, seed in zip(sound.images, seeds, strict=True):
                pngs.append(out / f"{stem}-seed{seed}.png")
                save_png(image, pngs[-1], text={"a2i": json.dumps({**used, "seed": seed})})
            archive = out / f"{stem}-images.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # PNGs are compressed already
                for png in pngs:
                    bundle.write(png, png.name)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # never half a result behind
            raise
    return [(str(png), f"seed {seed}") for png, seed in zip(pngs, seeds, strict=True)], str(archive)


def _remove_empty_results(root: Path) -> None:
    """Remove the ``result-*`` folders of ``root`` that are empty (swept); rmdir leaves any that still hold a file."""
    with contextlib.suppress(OSError):
        for folder in root.glob("result-*"):
            with contextlib.suppress(OSError):
                folder.rmdir()


def build_app(generator: SoundToImage, defaults: RenderSettings, fill: SequenceFill, max_upload_mb: float = 50,
              max_minutes: float = 10, uploads: UploadCounter | None = None, examples: Sequence[Example] = ()):
    """The Gradio Blocks; ``serve`` launches it with the matching size limit, auth, upload counting, a private
    temp dir and the example sounds it wrote there."""
    import gradio as gr

    kept: set[str] = set()  # the example sounds' server files: the app's own, for every visitor, never deleted

    def release(path: Path) -> None:
        # The sound is the user's, not ours to keep; the input is cleared below so the page agrees.
        if (uploads is None or uploads.release(path)) and os.path.realpath(path) not in kept:
            _delete_upload(path, Path(app.GRADIO_CACHE))

    def run(audio: str | None, steps: int, guidance: float, seed: int, size: int, images: int):
        if not audio:
            raise gr.Error(f"Upload or record a sound{', or pick an example,' if examples else ''} first.",
                           print_exception=False)
        path = Path(audio)
        try:
            count = _image_count(images)
            check_sound(path, max_upload_mb, max_minutes)
            settings = RenderSettings(int(steps), float(guidance), int(size), int(seed),
                                      batch_size=min(count, defaults.batch_size))
            with _GENERATOR_LOCK:
                (sound,) = generator.sounds([path])
                seconds = generator.render([sound], settings, images_per_sound=count, fill=fill)
        except SoundRefused as err:
            log.info("refused %r: %s", path.name, err)
            raise gr.Error(str(err), print_exception=False) from None
        except A2IError as err:  # the generator's own verdict on this sound (too short, say)
            log.info("refused %r: %s", path.name, err)
            raise gr.Error(_user_line(err, path), print_exception=False) from None
        except Exception as err:  # the browser gets one line, the console one line, never a trace
            log.error("generation failed for %r: %s: %s", path.name, type(err).__name__, err)
            raise gr.Error(FAILED, print_exception=False) from None
        finally:
            release(path)
        nearest = [[prompt, round(score, 4)] for prompt, score in sound.nearest]
        seeds = image_seeds(settings.seed, count)  # `a2i generate --images-per-sound`'s rule
        used = {"steps": settings.steps, "guidance": settings.guidance, "seed": settings.seed, "images": count,
                "size": settings.size, "sequence_fill": fill.name, "device": str(generator.device),
                "render_seconds": round(seconds, 2)}
        try:
            gallery, download = _save_results(sound, seeds, Path(app.GRADIO_CACHE), used)
        except OSError as err:  # a full disk, say
            log.error("saving the images of %r failed: %s", path.name, first_line(err))
            raise gr.Error(FAILED, print_exception=False) from None
        return gallery, nearest, used, None, download

    # Results, downloads and stray uploads older than 10 minutes are swept every 10 minutes while the server runs;
    # the example sounds are exempt (see _examples).
    with gr.Blocks(title="a2i: sound to image", delete_cache=(600, 600)) as app:
        gr.Markdown("# a2i — turn a sound into an image\nA frozen Stable Diffusion 3, steered by your audio.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Sound", elem_id="sound")
                if examples:
                    kept.update(_examples(gr, examples, audio))
                gr.Markdown(f"Up to {max_upload_mb:g} MB and {max_minutes:g} minutes. The sound is deleted from "
                            "the server once its images are made.")
                steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
                guidance = gr.Slider(0, 15, value=defaults.guidance, step=0.5, label="Guidance")
                seed = gr.Number(value=defaults.seed, precision=0, label="Seed",
                                 info="Image k of the sound takes seed + k.")
                images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images")
                size = gr.Dropdown([64, 128, 256, 512, 768, 1024], value=defaults.size, label="Size")
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                # No "download all" of Gradio's own: the button below is the one download of them all.
                gallery = gr.Gallery(label="Result", elem_id="result", columns=2, object_fit="contain",
                                     height="auto", interactive=False, buttons=["download", "fullscreen"])
                download = gr.DownloadButton("Download PNGs (zip)", elem_id="download", size="md")
                nearest = gr.Dataframe(headers=["nearest prompt", "cosine"], label="Nearest prompts",
                                       elem_id="nearest")
                used = gr.JSON(label="Settings used", elem_id="settings")
        # Explicit, not Gradio's default: GRADIO_DEFAULT_CONCURRENCY_LIMIT must not be able to raise it.
        button.click(run, [audio, steps, guidance, seed, size, images], [gallery, nearest, used, audio, download],
                     api_name="run", concurrency_limit=1)
    # Beyond max_size a request is told to come back later. api_open=False closes Gradio's direct REST route, which
    # would run requests beside the queue and so past its limit; the page and gradio_client go through the queue.
    app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE, api_open=False)
    return app


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


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (False when it names none)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0].split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def exposure_warning(host: str, auth: tuple[str, str] | None) -> str | None:
    """What to tell the person starting the server about who else can reach it; None on the loopback."""
    if is_loopback(host):
        return None
    if auth is None:
        return (f"LISTENING ON {host} WITHOUT --auth: anyone who can reach this machine can use the app and its "
                "GPU/CPU. Add --auth USER:PASSWORD, or keep the default --host 127.0.0.1")
    return (f"listening on {host}: other machines can reach the login page, and the password crosses the network "
            "unencrypted (plain HTTP) unless a TLS proxy sits in front")


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
          examples: ExampleMaker | None = None) -> None:
    """Run the app until Ctrl-C or SIGTERM; every file Gradio wrote (uploads, examples, results, downloads) is
    removed on the way out. ``examples`` writes the page's example sounds into the app's private temp dir at start
    (``functools.partial(project_examples, candidates, audio)``, say); none when it finds none."""
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
                        uploads=uploads, examples=_make_examples(examples, Path(temp_dir)))
        app.launch(server_name=host, server_port=port, share=False, show_error=False, auth=auth,
                   max_file_size=int(max_upload_mb * MB), prevent_thread_lock=True,
                   app_kwargs={"middleware": [Middleware(_CountUploads, counter=uploads)]})
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
