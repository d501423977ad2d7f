"""The app's Over time tab end to end: `a2i app` on the demo's models, driven by a real headless browser (as in
test_app, whose server and browser helpers this reuses): a recording's events, storyboard and film with its download,
the frame rate and the film's frame cap refused in the status line before any work, hostile API requests answered in
one line with their upload deleted, and Gradio's sweep taking every file a timeline wrote. The first tests need no
demo: the tab's rules on their own."""

from __future__ import annotations

import dataclasses
import io
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ruamel.yaml import YAML

from a2i_core.core.audio_io import write_wav
from a2i_core.core.params import MAX_FPS, load_params, read_yaml
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.app import build_app
from a2i_core.serve.generate import SoundToImage
from a2i_core.serve.guards import NOT_AN_UPLOAD, SILENT, UNREADABLE
from a2i_core.serve.timeline_tab import (
    BAD_FPS,
    NO_EVENT,
    SettingsRefused,
    check_film_length,
    film_params,
    timeline_in,
)
from a2i_core.timeline.events import read_csv
from a2i_core.timeline.make import Timeline
from a2i_core.timeline.motion import frame_count
from a2i_core.timeline.storyboard import caption
from a2i_core.timeline.video import film_info
from tests.conftest import ROOT, offline
from tests.helpers import free_port
from tests.serve.test_app import (
    BROWSER_ARGS,
    CHROMIUM,
    Api,
    Server,
    _app,
    _assert_clean,
    _noise,
    _png,
    _server_file,
    needs_chromium,
)

FPS = 2  # the browser's film: 12 frames of a 6 s recording, a few seconds of the tiny SD3 on a CPU
CAP = 10  # the tight project's timeline.max_frames: its 6 s recordings make a film at 1 frame/s, not at 4 (params')
SECONDS = 6.0  # every recording here: two synthetic clips of 3 s end to end
EVENTS = "Events (times in seconds)"  # the events table's label, its name as a grid


def _recording(path: Path, labels: list[str], seed: int = 3) -> Path:
    """The synthetic clips of ``labels``, 3 s each, end to end: a recording whose sound changes half way."""
    waves = [synthesize(next(iter(clip_specs([label], 1, 3.0, 3.0, seed).values()))) for label in labels]
    write_wav(path, np.concatenate(waves))
    return path


def _too_long(seconds: float, fps: float, cap: int) -> str:
    return (f"At {fps:g} frames per second, the film of this {seconds:.1f} s sound would be "
            f"{frame_count(seconds, fps):,} frames, more than the {cap:,} this app draws: lower the frame rate, or "
            "leave out the film.")


# ---- the tab's rules, without a model -------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [0, 1000, -1, MAX_FPS + 0.5, float("nan"), float("inf"), None, "4", True, [4]])
def test_a_frame_rate_params_yaml_refuses_is_refused_in_one_line(fps):
    with pytest.raises(SettingsRefused) as err:
        film_params(offline("timeline"), True, fps)
    assert str(err.value) == BAD_FPS == f"Frames per second must be a number above 0 and at most {MAX_FPS:g}."


def test_a_frame_rate_params_yaml_takes_is_used_and_without_a_film_none_is_read():
    cfg = offline("timeline")
    assert film_params(cfg, True, 2).fps == 2.0 and film_params(cfg, True, MAX_FPS).fps == MAX_FPS
    assert film_params(cfg, True, 0.5) == offline("timeline", fps=0.5)  # every other key as params has it
    assert film_params(cfg, False, 0) is cfg  # no film: its frame rate is not asked for
    for film in ["yes", 1, None]:  # an API client may send anything for the checkbox
        with pytest.raises(SettingsRefused, match=r"^Draw the film must be true or false\.$"):
            film_params(cfg, film, 2)


def test_a_film_over_max_frames_is_refused_and_one_at_the_cap_is_not():
    cfg = offline("timeline", fps=4.0, max_frames=24)
    check_film_length(6.0, None, cfg)  # 24 frames: at the cap
    with pytest.raises(SettingsRefused) as err:
        check_film_length(6.2, None, cfg)  # 25
    assert str(err.value) == _too_long(6.2, 4, 24)
    check_film_length(600.0, 6.0, cfg)  # only the first max_seconds are heard, and drawn
    with pytest.raises(SettingsRefused, match="would be 2,400 frames, more than the 24"):
        check_film_length(600.0, None, cfg)


def test_the_over_time_tab_is_there_only_with_params_timeline_section():
    # The generator is only used by requests.
    plain = build_app(None, RenderSettings(4, 3.0, 64, 0, 1), SequenceFill("empty_prompt"))
    tabbed = build_app(None, RenderSettings(4, 3.0, 64, 0, 1), SequenceFill("empty_prompt"),
                       timeline=offline("timeline"))
    ids = {name: {c.get("props", {}).get("elem_id") for c in app.get_config_file()["components"]}
           for name, app in [("plain", plain), ("tabbed", tabbed)]}
    tabs = [c["props"]["label"] for c in tabbed.get_config_file()["components"] if c["type"] == "tabitem"]
    assert tabs == ["One image", "Over time"]
    assert {"sound", "result", "status"} <= ids["plain"]
    assert not any(str(i).startswith("timeline-") for i in ids["plain"])
    assert {"sound", "result", "status", "timeline-sound", "timeline-events", "timeline-storyboard", "timeline-player",
            "timeline-download", "timeline-files", "timeline-status"} <= ids["tabbed"]
    names = {d.get("api_name") for d in tabbed.get_config_file()["dependencies"]}
    assert {"generate", "run", "make_timeline", "timeline"} <= names


def test_a_timeline_folder_keeps_only_what_the_page_is_handed_and_goes_whole_on_failure(tmp_path):
    def make(out: Path) -> Timeline:
        for name in ["timeline.csv", "timeline.vtt", ".timeline.lock"]:
            (out / name).write_text("x")
        (out / "film.mp4.frames").mkdir()
        return Timeline([], 1.0, out)

    def broken(out: Path) -> Timeline:
        (out / "timeline.csv").write_text("x")
        raise OSError("No space left on device")

    made = timeline_in(tmp_path, make)
    assert sorted(p.name for p in made.folder.iterdir()) == ["timeline.csv", "timeline.vtt"]  # no lock, no frames
    with pytest.raises(OSError):
        timeline_in(tmp_path, broken)
    assert list(tmp_path.iterdir()) == [made.folder]  # the failed one's folder went whole
    for path in made.folder.iterdir():
        path.unlink()  # as Gradio's sweep does: files only
    again = timeline_in(tmp_path, make)
    assert list(tmp_path.iterdir()) == [again.folder]  # the emptied folder went when the next timeline was made


# ---- end to end, on the demo's models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(demo_workspace, tmp_path_factory):
    """`a2i app` on the demo's project, as a user starts it (no examples: this tab offers none)."""
    server = _app(demo_workspace[0], tmp_path_factory.mktemp("timeline-app"), "--no-examples")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tight(demo_workspace, tmp_path_factory):
    """`a2i app` on a project with the demo's models whose params.yaml caps a film at CAP frames, and uploads at
    0.2 minutes: the app reads the project's own timeline section."""
    project = tmp_path_factory.mktemp("tight-project")
    (project / "models").symlink_to(demo_workspace[0] / "models")
    raw = read_yaml(demo_workspace[0] / "params.yaml")
    raw["timeline"]["max_frames"] = CAP
    with open(project / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    assert load_params(project / "params.yaml").timeline.fps == 4  # params': 24 frames for SECONDS, over CAP
    server = _app(project, tmp_path_factory.mktemp("tight-app"), "--no-examples", "--max-minutes", "0.2")
    yield server
    server.stop()


def _timelines(server: Server) -> list[Path]:
    """The timeline folders the server made in its private temp dir."""
    return sorted(server.tmp.glob("a2i-app-*/timeline-*"))


def _events_table(page, playwright) -> list[list[str]]:
    """The events table as the page shows it, a list of cells per row, once every row is drawn."""
    grid = page.get_by_role("grid", name=EVENTS)
    cells = grid.get_by_role("gridcell")
    cells.first.wait_for(state="visible", timeout=60_000)
    rows = int(grid.get_attribute("aria-rowcount")) - 1  # less the header
    playwright.expect(cells).to_have_count(4 * rows, timeout=30_000)
    texts = cells.all_inner_texts()
    return [texts[i:i + 4] for i in range(0, len(texts), 4)]


def _get(page, url: str, href: str) -> bytes:
    return page.request.get(href if href.startswith("http") else url + href.lstrip("/")).body()


def _open_over_time(p, url: str, wav: Path):
    """A browser on the app's Over time tab with ``wav`` uploaded: (browser, page, the uploaded sound's link)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Over time").click()
    sound = page.locator("#timeline-sound [data-testid=download-link]")
    page.locator("#timeline-sound input[type=file]").set_input_files(str(wav))
    sound.wait_for(state="attached", timeout=60_000)
    return browser, page, sound


@needs_chromium
def test_a_recording_becomes_events_a_storyboard_and_a_film_in_the_browser(server, tmp_path):
    """The tab's whole use: upload, a frame rate, the events table, captioned keyframes, the film in the player with
    the labels as subtitles and its download, the timeline's files; then a refused frame rate (one line, the last
    result in place, the recording kept) and the same recording without a film (no re-upload)."""
    playwright = pytest.importorskip("playwright.sync_api")
    wav = _recording(tmp_path / "dog-then-siren.wav", ["dog", "siren"])
    with playwright.sync_playwright() as p:
        browser, page, sound = _open_over_time(p, server.url, wav)
        uploaded = _server_file(sound.get_attribute("href"))
        make, status = page.get_by_role("button", name="Make timeline"), page.locator("#timeline-status")
        page.get_by_label("Frames per second").fill(str(FPS))
        make.click()
        video = page.locator("#timeline-player video")
        video.wait_for(state="attached", timeout=300_000)  # a liveness bound, not a speed target
        film_src, track = video.get_attribute("src"), page.locator("#timeline-player track").get_attribute("src")
        table = _events_table(page, playwright)
        thumbnails = page.locator("#timeline-storyboard .thumbnail-item img")
        captions = [img.get_attribute("alt") for img in thumbnails.all()]
        keyframes = [_get(page, server.url, img.get_attribute("src")) for img in thumbnails.all()]
        links = {Path(urllib.parse.unquote(a.get_attribute("href"))).name: a.get_attribute("href")
                 for a in page.locator("#timeline-files a").all()}
        files = {name: _get(page, server.url, href) for name, href in links.items()}
        with page.expect_download(timeout=60_000) as download:
            page.locator("#timeline-download").click()
        mp4 = tmp_path / download.value.suggested_filename
        download.value.save_as(mp4)

        page.get_by_label("Frames per second").fill("0")
        make.click()
        playwright.expect(status).to_have_text(f"⚠️ {BAD_FPS}", timeout=60_000)
        refused = (video.get_attribute("src"), page.get_by_text("Error", exact=True).count(), sound.count(),
                   uploaded.is_file())

        page.get_by_label("Frames per second").fill(str(FPS))
        page.get_by_label("Draw the film").uncheck()
        make.click()
        video.wait_for(state="detached", timeout=300_000)  # the player emptied: no film asked for
        playwright.expect(status).to_be_hidden(timeout=30_000)
        playwright.expect(page.locator("#timeline-download")).to_be_hidden(timeout=30_000)
        again = _events_table(page, playwright)
        kept = (sound.count(), uploaded.is_file())
        browser.close()

    film = _server_file(film_src)
    assert film.is_relative_to(server.tmp) and film.name == "film.mp4" and film.parent.name.startswith("timeline-")
    assert mp4.read_bytes() == film.read_bytes()  # the download is the film the player shows
    assert _server_file(track) == film.parent / "timeline.vtt"  # the labels as the film's subtitles
    assert sorted(files) == ["storyboard.png", "timeline.csv", "timeline.vtt"]
    (tmp_path / "timeline.csv").write_bytes(files["timeline.csv"])
    events = read_csv(tmp_path / "timeline.csv")
    labelled = [e for e in events if e.label is not None]

    # The events tile the recording; the table is the CSV's; a keyframe per labelled event, captioned with its times
    # and label, its settings and event in its PNG's text.
    assert events[0].start == 0 and events[-1].end == pytest.approx(SECONDS, abs=0.01)
    assert all(a.end == b.start for a, b in zip(events, events[1:], strict=False))
    assert labelled and all(e.label.startswith("an image of a ") for e in labelled)
    assert [[float(start), float(end), label, float(score)] for start, end, label, score in table] == [
        [round(e.start, 3), round(e.end, 3), e.label or NO_EVENT, round(e.score, 4)] for e in events]
    assert len(captions) == len(labelled)
    for shown, event in zip(captions, labelled, strict=True):
        # The storyboard's own caption; the CSV holds the score to 4 places, the page's caption was made from the
        # whole one: either end of the CSV's rounding gives it.
        assert shown in {" · ".join(caption(dataclasses.replace(event, score=event.score + d)))
                         for d in (-5e-5, 0, 5e-5)}, (shown, event)
    assert len(keyframes) == len(labelled)
    for data, event in zip(keyframes, labelled, strict=True):
        _png(data)  # the project's render.size, not blank
        with Image.open(io.BytesIO(data)) as png:
            text = json.loads(png.info["a2i"])
        assert text["event"]["label"] == event.label and text["steps"] == 8
    assert files["storyboard.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["timeline.vtt"].startswith(b"WEBVTT")

    # The film: H.264 in yuv420p with its index first (a browser plays it at once), FPS frames a second for the
    # recording's length, and the recording's sound.
    info = film_info(mp4)
    assert (info["video_codec"], info["pix_fmt"], info["faststart"]) == ("h264", "yuv420p", True), info
    assert info["fps"] == FPS and info["frames"] == frame_count(SECONDS, FPS), info
    assert abs(info["duration"] - SECONDS) <= 1 / FPS, info
    assert info["audio_codec"] == "aac" and abs(info["audio_duration"] - SECONDS) <= 1 / FPS, info

    assert refused == (film_src, 0, 1, True)  # one line; the film still shown; the recording kept for another try
    assert again == table  # the same recording, heard again: the same events
    assert kept == (1, True)
    console = server.console()
    assert "Traceback" not in console
    assert console.count("refused 'dog-then-siren.wav': Frames per second must be") == 1


@needs_chromium
def test_a_film_over_the_frame_cap_is_refused_in_the_status_line_before_any_work(tight, tmp_path):
    """params' timeline.max_frames, read from the project: at params' 4 frames/s a 6 s film is 24 frames, over the
    cap of 10: one line under the button before anything is heard or drawn; at 1 frame/s, the same kept recording
    makes its film."""
    playwright = pytest.importorskip("playwright.sync_api")
    wav = _recording(tmp_path / "bell-then-rain.wav", ["bell", "rain"])
    before = _timelines(tight)
    with playwright.sync_playwright() as p:
        browser, page, sound = _open_over_time(p, tight.url, wav)
        make, status = page.get_by_role("button", name="Make timeline"), page.locator("#timeline-status")
        playwright.expect(page.get_by_label("Frames per second")).to_have_value("4")  # params' timeline.fps
        make.click()
        playwright.expect(status).to_have_text(f"⚠️ {_too_long(SECONDS, 4, CAP)}", timeout=60_000)
        made_then = _timelines(tight)
        errors = page.get_by_text("Error", exact=True).count()

        page.get_by_label("Frames per second").fill("1")
        make.click()
        video = page.locator("#timeline-player video")
        video.wait_for(state="attached", timeout=300_000)  # a liveness bound, not a speed target
        playwright.expect(status).to_be_hidden(timeout=30_000)
        film = _server_file(video.get_attribute("src"))
        browser.close()
    assert made_then == before and errors == 0  # refused before its folder was made: no work began
    assert film_info(film)["frames"] == frame_count(SECONDS, 1) <= CAP
    assert "Traceback" not in tight.console()


def _file(path: object) -> dict:
    return {"path": path, "orig_name": "x.wav", "meta": {"_type": "gradio.FileData"}}


def test_hostile_timeline_requests_are_one_line_each_and_their_uploads_are_deleted(tight, tmp_path):
    api = Api(tight.url, login=False)
    write_wav(tmp_path / "silent.wav", np.zeros(16_000, np.float32))
    (tmp_path / "junk.wav").write_bytes(b"this is not audio " * 100)
    long = _noise(tmp_path / "long.wav", 13)  # over 0.2 minutes
    cases = [  # (sound, film, fps, the line) ; each noise its own bytes, so its own server file
        (1, True, 0, BAD_FPS),
        (2, True, 1000, BAD_FPS),
        (3, True, -1, BAD_FPS),
        (4, True, None, BAD_FPS),
        (5, True, "4", BAD_FPS),
        (6, True, True, BAD_FPS),
        (7, "yes", 4, "Draw the film must be true or false."),
        (8, True, 4, _too_long(SECONDS, 4, CAP)),
        (long, False, 4, "The sound is longer than the 0.2-minute limit."),
        (tmp_path / "junk.wav", False, 4, UNREADABLE),
        (tmp_path / "silent.wav", False, 4, SILENT),
    ]
    before, lines = _timelines(tight), tight.console().count("refused")
    for sound, film, fps, message in cases:
        path = sound if isinstance(sound, Path) else _recording(tmp_path / f"{sound}.wav", ["dog", "bell"], seed=sound)
        uploaded = api.upload(path)
        uploaded.raise_for_status()
        (server_path,) = uploaded.json()
        event, data = api.call("timeline", [_file(server_path), film, fps])
        assert (event, json.loads(data)["error"]) == ("error", message), (sound, film, fps, data)
        _assert_clean(data, tight)
        assert not Path(server_path).exists(), (sound, film, fps)  # the upload, released with the refusal
    event, data = api.call("timeline", [_file("/etc/passwd"), False, 4])
    assert (event, json.loads(data)["error"]) == ("error", NOT_AN_UPLOAD)
    assert _timelines(tight) == before  # all refused before any work
    console = tight.console()
    assert console.count("refused") - lines == len(cases) + 1 and "Traceback" not in console


def test_a_timeline_through_the_api_deletes_its_upload_and_hands_back_its_files(tight, tmp_path):
    api = Api(tight.url, login=False)
    uploaded = api.upload(_recording(tmp_path / "clock then drums.wav", ["clock", "drums"])).json()[0]
    event, data = api.call("timeline", [_file(uploaded), True, 1])
    assert event == "complete", data
    table, gallery, player, download, files, used, _, sound = json.loads(data)
    assert sound is None and not Path(uploaded).exists()  # a client's upload is gone once its request is done
    assert [row[2] for row in table["data"]] and len(gallery) == sum(row[2] != NO_EVENT for row in table["data"])
    film = Path(player["path"])
    assert film.name == "film.mp4" and film.is_relative_to(tight.tmp) and Path(download["path"]) == film
    assert sorted(Path(f["path"]).name for f in files) == ["storyboard.png", "timeline.csv", "timeline.vtt"]
    assert (used["film"], used["fps"], used["frames"]) == (True, 1.0, frame_count(SECONDS, 1))
    assert all(Path(f["path"]).parent == film.parent for f in files)
    assert "Traceback" not in tight.console()


# Gradio's own queue code, run in this process here, warns about pandas options it uses.
@pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
def test_the_sweep_takes_every_file_of_a_timeline_and_the_next_timeline_removes_its_folders(demo_workspace, tmp_path,
                                                                                             monkeypatch):
    """Everything a timeline writes is handed to the page (so Gradio tracks it): Gradio's delete_cache sweep, run
    here at once with age 0, leaves none of it; the next timeline removes the folders it emptied."""
    from gradio.route_utils import delete_files_created_by_app

    project, temp = demo_workspace[0], tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))  # as serve sets it, before the app is built
    params = load_params(project / "params.yaml")
    models = project / "models"
    generator = SoundToImage.from_pretrained(models / "mapper", models / "audio_encoder", models / "sd3",
                                             torch.device("cpu"), "float32")
    app = build_app(generator, RenderSettings.from_params(params.render), SequenceFill.from_params(params.render),
                    timeline=params.timeline)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               show_error=False)
    try:
        api = Api(app.local_url, login=False)
        sound = _recording(tmp_path / "engine then birds.wav", ["engine", "birds"])
        event, data = api.call("timeline", [_file(api.upload(sound).json()[0]), True, 1])
        assert event == "complete", data
        (folder,) = temp.glob("timeline-*")
        written = sorted(p for p in folder.rglob("*") if p.is_file())
        # What the page is handed, and nothing else (the library's lock is not served, so never swept: it went).
        assert {p.name for p in written if p.parent == folder} == {"film.mp4", "timeline.csv", "timeline.vtt",
                                                                   "storyboard.png"}, written
        assert {p.parent.name for p in written if p.parent != folder} == {"keyframes"}, written
        delete_files_created_by_app(app, age=0)
        assert [p for p in folder.rglob("*") if p.is_file()] == []  # every file it wrote was swept
        event, data = api.call("timeline", [_file(api.upload(sound).json()[0]), False, 1])
        assert event == "complete", data
        assert not folder.exists()  # emptied by the sweep, removed by the next timeline
        (kept,) = temp.glob("timeline-*")
        assert not (kept / "film.mp4").exists() and (kept / "timeline.csv").is_file()
    finally:
        app.close()


def test_the_app_command_reads_params_timeline_section(tmp_path):
    """`a2i app` reads the project's timeline section: a wrong one stops it in one line before any model loads."""
    from typer.testing import CliRunner

    from a2i_core.cli import app

    raw = read_yaml(ROOT / "params.yaml")
    raw["timeline"]["fps"] = 0
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    result = CliRunner().invoke(app, ["app", "--project", str(tmp_path), "--no-examples"])
    assert result.exit_code == 1, result.output
    # The project has no models: had they been loaded first, that would have been the message.
    assert result.output.strip() == f"error: {tmp_path / 'params.yaml'}: timeline.fps: must be in (0, 60], got 0"


def test_a_project_without_a_timeline_section_gets_the_app_without_its_tab(tmp_path):
    """A project's params.yaml from before timelines: the app still runs (one note), only the tab is missing."""
    from typer.testing import CliRunner

    from a2i_core.cli import app

    raw = read_yaml(ROOT / "params.yaml")
    del raw["timeline"]
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    result = CliRunner().invoke(app, ["app", "--project", str(tmp_path), "--no-examples"])
    assert result.exit_code == 1  # the project has no models: the first thing after params that can fail
    notes, error = result.output.strip().splitlines()[:-1], result.output.strip().splitlines()[-1]
    params = tmp_path / "params.yaml"
    assert notes == [f"note: {params}: timeline: missing (not read by the app)",
                     f"note: {params}: no timeline section: the app goes without what needs it (a2i's params.yaml "
                     "has one to copy)"]
    assert error.startswith(f"error: {tmp_path / 'models' / 'mapper'}: no trained mapper here")
