"""The app's Over time tab: a recording's events, a keyframe per event and a film with its sound, made by
:func:`a2i_core.timeline.make.make_timeline` under the same guards and the same one generation slot as the first
tab (:mod:`a2i_core.serve.page`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.params import MAX_FPS, TimelineParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.generate import SoundToImage
from a2i_core.serve.guards import FAILED, SoundRefused, check_sound, user_line
from a2i_core.serve.page import GENERATOR_LOCK, kept_note, let_go, status_line
from a2i_core.serve.results import render_settings
from a2i_core.serve.uploads import renew
from a2i_core.timeline.make import Timeline, make_timeline
from a2i_core.timeline.motion import frame_count
from a2i_core.timeline.storyboard import caption

log = logging.getLogger(__name__)
BAD_FPS = f"Frames per second must be a number above 0 and at most {MAX_FPS:g}."
NO_EVENT = "(no event)"  # the events table's label for silence or a low-confidence stretch
TIMELINE_PREFIX = "timeline-"  # each timeline's folder in Gradio's cache


class SettingsRefused(A2IError):
    """A request whose settings the app will not use (the frame rate, a film too long at it): the sound may be fine,
    so a page keeps it for another try; the message is the one line the user sees."""


@dataclasses.dataclass(frozen=True)
class TimelineWork:
    """What the Over time tab works with: the app's generator and render settings, params' timeline section, the
    upload limits, and where Gradio keeps its files (known once the app exists)."""

    generator: SoundToImage
    defaults: RenderSettings
    fill: SequenceFill
    cfg: TimelineParams
    max_upload_mb: float
    max_minutes: float
    cache: Callable[[], Path]


def over_time_tab(gr, work: TimelineWork, release: Callable[[Path], None], no_sound: str) -> None:
    """The Over time tab: a recording's events (a table), a keyframe per event (a gallery captioned with its times
    and label), the film with the sound and the labels as subtitles (a player and an MP4 download), and the
    timeline as CSV and WebVTT with the storyboard sheet.

    Its events go through the same guards as the first tab's (the upload's size, length and sound checked, a file
    outside the app's folder refused, one status line per refusal, the upload released) and share its one
    generation slot. Like Generate, the page's button keeps the recording for the next try (another frame rate, the
    film after the timeline), released when replaced or unused; ``/timeline``, for API clients, deletes the request's
    upload once it is done and answers a refusal with an error event.
    """
    cfg = work.cfg

    def make(path: Path, film: object, fps: object, page: bool) -> tuple:
        """The tab's outputs for one request (for the ``page``, or plain values for an API client). SoundRefused or
        SettingsRefused (the visitor's line) when this sound or these settings cannot be used; gr.Error(FAILED) when
        the work failed for another reason."""
        try:
            chosen = film_params(cfg, film, fps)
            seconds = check_sound(path, work.max_upload_mb, work.max_minutes)
            if film:
                check_film_length(seconds, work.generator.max_seconds, chosen)
            used = render_settings(work.defaults, work.fill, work.generator.device)
            with GENERATOR_LOCK:  # the first tab's lock: one generation at a time, whichever tab asks
                start = time.perf_counter()
                made = timeline_in(work.cache(), lambda out: make_timeline(
                    work.generator, path, out, chosen, work.defaults, work.fill, film=film, used=used))
                used["render_seconds"] = round(time.perf_counter() - start, 2)
        except (SoundRefused, SettingsRefused) as err:
            log.info("refused %r: %s", path.name, err)
            raise
        except A2IError as err:  # the generator's own verdict on this sound (too short, say)
            log.info("refused %r: %s", path.name, err)
            raise SoundRefused(user_line(err, path)) from None
        except Exception as err:  # a full disk, say: the browser gets one line, the console one line, never a trace
            log.error("the timeline of %r failed: %s: %s", path.name, type(err).__name__, first_line(err, limit=300))
            raise gr.Error(FAILED, print_exception=False) from None
        return timeline_outputs(gr, made, chosen if film else None, used, page)

    def run(audio: str | None, film: object, fps: object) -> tuple:
        if not audio:
            raise gr.Error(no_sound, print_exception=False)
        path = Path(audio)
        try:
            results = make(path, film, fps, page=False)
        except (SoundRefused, SettingsRefused) as err:
            raise gr.Error(str(err), print_exception=False) from None
        finally:
            release(path)
        return *results, None  # None: the sound input is cleared, as its file is gone

    def page(audio: str | None, film: object, fps: object, held: str | None,
             progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008 (Gradio reads the default)
        # `held` is the recording this page kept after its last request (server-side state: a client cannot name it)
        path = Path(audio) if audio else None
        let_go(held, path, release)
        unchanged = (gr.skip(),) * len(outputs)  # a refusal leaves the last good result on screen
        if path is None:
            return *unchanged, status_line(gr, no_sound), gr.skip(), None
        try:
            results = make(path, film, fps, page=True)
        except SoundRefused as err:  # this sound cannot be used: deleted, and the input cleared to match
            release(path)
            return *unchanged, status_line(gr, str(err)), None, None
        except (SettingsRefused, gr.Error) as err:  # the sound may be fine: kept for another try
            return *unchanged, status_line(gr, str(getattr(err, "message", err))), gr.skip(), str(path)
        renew(path, work.cache())
        return *results, status_line(gr, None), gr.skip(), str(path)

    held = gr.State(None, delete_callback=lambda path: path and release(Path(path)))
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Recording",
                             elem_id="timeline-sound")
            gr.Markdown(kept_note(work.max_upload_mb, work.max_minutes, "recording") + " Each stretch of it is "
                        "labelled; each event gets a keyframe, and the film moves from keyframe to keyframe.")
            film = gr.Checkbox(value=True, label="Draw the film", elem_id="timeline-film",
                               info="Without it, the events and their keyframes alone (much sooner).")
            fps = gr.Number(value=cfg.fps, label="Frames per second", elem_id="timeline-fps",
                            info=f"Each frame is a whole image: up to {MAX_FPS:g} a second, and at most "
                                 f"{cfg.max_frames:,} frames in a film.")
            button = gr.Button("Make timeline", variant="primary", elem_id="timeline-make")
            status = gr.Markdown(visible=False, elem_id="timeline-status")  # the one place a refusal is shown
            notes = gr.Markdown(visible=False, elem_id="timeline-notes")
        with gr.Column():
            events = gr.Dataframe(headers=["start", "end", "label", "score"], label="Events (times in seconds)",
                                  elem_id="timeline-events", interactive=False)
            gallery = gr.Gallery(label="Storyboard", elem_id="timeline-storyboard", columns=4, object_fit="contain",
                                 height="auto", interactive=False, buttons=["download", "fullscreen"])
            player = gr.Video(label="Film", elem_id="timeline-player", interactive=False)
            download = gr.DownloadButton("Download the film (MP4)", elem_id="timeline-download", size="md",
                                         visible=False)
            files = gr.File(label="Timeline (CSV, WebVTT) and storyboard sheet", file_count="multiple",
                            elem_id="timeline-files", interactive=False)
            used = gr.JSON(label="Settings used", elem_id="timeline-settings")
    outputs = [events, gallery, player, download, files, used, notes]
    # The first tab's slot (concurrency_id "generate", limit 1): a film and an image never render at once.
    button.click(page, [audio, film, fps, held], [*outputs, status, audio, held], api_name="make_timeline",
                 api_visibility="private", concurrency_limit=1, concurrency_id="generate",
                 show_progress_on=[events, gallery, player])
    gr.Button(visible=False).click(run, [audio, film, fps], [*outputs, audio], api_name="timeline",
                                   concurrency_limit=1, concurrency_id="generate")


def film_params(cfg: TimelineParams, film: object, fps: object) -> TimelineParams:
    """params' timeline section with the visitor's frame rate, checked by params.yaml's own rule for timeline.fps
    (an API client can send any value); unchanged when no film is asked for."""
    if not isinstance(film, bool):
        raise SettingsRefused("Draw the film must be true or false.")
    if not film:
        return cfg
    if isinstance(fps, bool) or not isinstance(fps, int | float):
        raise SettingsRefused(BAD_FPS)
    try:
        return dataclasses.replace(cfg, fps=float(fps))
    except ValueError:  # TimelineParams' check: (0, MAX_FPS], finite
        raise SettingsRefused(BAD_FPS) from None


def check_film_length(seconds: float, max_seconds: float | None, cfg: TimelineParams) -> None:
    """Refuse, before any work, a film of more than timeline.max_frames frames (what is heard of ``seconds``)."""
    heard = seconds if max_seconds is None else min(seconds, max_seconds)
    frames = frame_count(heard, cfg.fps)
    if frames > cfg.max_frames:
        raise SettingsRefused(f"At {cfg.fps:g} frames per second, the film of this {heard:.1f} s sound would be "
                              f"{frames:,} frames, more than the {cfg.max_frames:,} this app draws: lower the frame "
                              "rate, or leave out the film.")


def timeline_in(root: Path, make: Callable[[Path], Timeline]) -> Timeline:
    """``make`` a timeline into a new folder of Gradio's cache (where Gradio serves its files without a copy, and
    its sweep and the server's exit remove them); the folder goes if it fails, and any file in it the page is not
    handed (the library's lock, say), which the sweep would never take, goes once it is made. Earlier timeline
    folders the sweep emptied (it deletes files only) are removed first. Call under GENERATOR_LOCK: no other
    timeline is being made."""
    for folder in root.glob(f"{TIMELINE_PREFIX}*"):
        remove_empty_folders(folder)
    out = Path(tempfile.mkdtemp(prefix=TIMELINE_PREFIX, dir=root))
    try:
        made = make(out)
        shown = {path.resolve() for path in served(made)}
        for path in [p for p in out.rglob("*") if not p.is_dir() and p.resolve() not in shown]:
            path.unlink()
        remove_empty_folders(out)  # the film's frames folder, say, if the library left it
        return made
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never half a timeline behind
        raise


def timeline_files(made: Timeline) -> list[Path]:
    """The timeline as files to download: its CSV and WebVTT, and the storyboard sheet when it has keyframes."""
    return [made.folder / "timeline.csv", made.folder / "timeline.vtt", *([made.storyboard] if made.storyboard else [])]


def served(made: Timeline) -> list[Path]:
    """Every file of a timeline the page shows or offers: the keyframes, the film and the files to download."""
    return [*made.keyframes, *([made.film] if made.film else []), *timeline_files(made)]


def remove_empty_folders(folder: Path) -> None:
    """``folder`` and the folders in it that hold nothing; rmdir leaves any that still hold a file."""
    for parent, _, _ in os.walk(folder, topdown=False):  # the deepest first
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def timeline_outputs(gr, made: Timeline, film: TimelineParams | None, used: dict, page: bool) -> tuple:
    """The tab's results from one timeline: events table, storyboard gallery, player, download, files, settings
    used and notes; for the ``page``, the player with the labels as subtitles, the download shown only with a film,
    the notes only when there are some (an API client gets the film's path twice and the notes' text)."""
    rows = [[round(e.start, 3), round(e.end, 3), e.label if e.label is not None else NO_EVENT, round(e.score, 4)]
            for e in made.events]
    gallery = [(str(path), " · ".join(caption(event))) for path, event in zip(made.keyframes, made.labelled,
                                                                                 strict=True)]
    vtt = made.folder / "timeline.vtt"
    files = [str(path) for path in timeline_files(made)]
    shown = {**used, "film": film is not None, "seconds": round(made.seconds, 2), "events": len(made.labelled)}
    if film is not None:
        shown.update(fps=film.fps, frames=frame_count(made.seconds, film.fps))
    notes = "\n".join(f"- Note: {note}" for note in made.notes)
    movie = None if made.film is None else str(made.film)
    if not page:
        return rows, gallery, movie, movie, files, shown, notes
    return (rows, gallery, gr.Video(value=movie, subtitles=None if movie is None else str(vtt)),
            gr.DownloadButton(value=movie, visible=movie is not None), files, shown,
            gr.Markdown(notes, visible=bool(notes)))
