"""`a2i app` end to end: a real headless browser (Debian's chromium, driven by Playwright), and the server under real
use: example sounds (the project's, or a hostile folder's), several images per sound and their download, a page that
keeps its sound and its last good result, parallel requests, upload limits, upload and temp-file cleanup (Gradio's
sweep too), short errors, login."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from a2i_core.core.audio_io import write_wav
from a2i_core.core.errors import A2IError
from a2i_core.core.params import load_params
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.offline.workspace import tool_env
from a2i_core.serve.app import _make_examples, build_app
from a2i_core.serve.examples import project_examples
from a2i_core.serve.generate import SoundToImage
from a2i_core.serve.guards import MAX_IMAGES, SoundRefused, check_sound, exposure_warning, parse_auth
from tests.helpers import free_port
from tests.serve.test_examples import hostile_folder, shown_name

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="needs Debian's chromium (.ci/run installs it)")
USER, PASSWORD = "alice", "s3cr:et"  # a ':' in the password: only the first one separates
@dataclass
class Server:
    url: str
    process: subprocess.Popen
    tmp: Path  # the server's TMPDIR: everything it writes to "the temp folder" lands here
    log: Path  # its console

    def console(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM, as a service manager or `kill` would
            self.process.wait(timeout=30)
        return self.console()


def _launch(argv: Callable[[int], list[str]], root: Path, **env: str) -> Server:
    """Start a server (``argv(port)``) with its own TMPDIR and console file; return once its page answers."""
    root.mkdir(parents=True, exist_ok=True)
    tmp, log = root / "tmp", root / "console.log"
    tmp.mkdir()
    port = free_port()
    env = {**tool_env(), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost", "TMPDIR": str(tmp),
           **env}
    with open(log, "w") as out:
        process = subprocess.Popen(argv(port), env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}/", process, tmp, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited: {server.console()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url, timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    pytest.fail("the app did not answer within 90 s")


def _app(project: Path, root: Path, *options: str, **env: str) -> Server:
    """``a2i app --project PROJECT --device cpu OPTIONS``, as a user starts it."""
    return _launch(lambda port: [sys.executable, "-m", "a2i_core.cli", "app", "--project", str(project), "--port",
                                 str(port), "--device", "cpu", *options], root, **env)


@pytest.fixture(scope="module")
def app_server(demo_workspace, tmp_path_factory):
    """One server for the browser tests: no login, and the project's own example sounds."""
    server = _app(demo_workspace[0], tmp_path_factory.mktemp("app"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """A folder of "my own sounds" holding every kind of trouble, and how each entry must end (see test_examples)."""
    folder = tmp_path_factory.mktemp("examples") / "my sounds ✓"
    return folder, hostile_folder(folder)


@pytest.fixture(scope="module")
def guarded(demo_workspace, tmp_path_factory, hostile):
    """One server for the limits, parallel, login and examples-folder tests: 1 MB, 0.1 minute (6 s), a login, the
    hostile folder as --examples, and Gradio's default concurrency raised to 8, the setting under which the
    unguarded generator mixed up requests."""
    server = _app(demo_workspace[0], tmp_path_factory.mktemp("guarded"), "--max-upload-mb", "1", "--max-minutes",
                  "0.1", "--auth", f"{USER}:{PASSWORD}", "--examples", str(hostile[0]),
                  GRADIO_DEFAULT_CONCURRENCY_LIMIT="8")
    yield server
    server.stop()


def _sound(path: Path, label: str, seconds: float = 2.0) -> Path:
    write_wav(path, synthesize(next(iter(clip_specs([label], 1, seconds, seconds, 3).values()))))
    return path


def _noise(path: Path, seconds: float) -> Path:
    write_wav(path, 0.1 * np.random.default_rng(0).standard_normal(int(16_000 * seconds)).astype(np.float32))
    return path


class Api:
    """The HTTP API as the browser uses it (log in, upload, call, read the event stream), so a test sees exactly
    the bytes a user would."""

    def __init__(self, url: str, login: bool = True) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=60)
        if login:
            self.http.post("login", data={"username": USER, "password": PASSWORD}).raise_for_status()

    def upload(self, path: Path):
        return self.http.post("gradio_api/upload", files={"files": (path.name, path.read_bytes(), "audio/wav")})

    def call(self, api_name: str, data: list) -> tuple[str, str]:
        """(event, data) of one call, as sent: "complete" and the outputs' JSON, or "error" and the error's."""
        started = self.http.post(f"gradio_api/call/{api_name}", json={"data": data})
        started.raise_for_status()
        stream = self.http.get(f"gradio_api/call/{api_name}/{started.json()['event_id']}").text
        events = [block.split("\n", 1) for block in stream.strip().split("\n\n")]
        event, data = events[-1]
        return event.removeprefix("event: "), data.removeprefix("data: ")

    def run(self, sound: str | dict, seed: int = 1, images: int | float = 1) -> tuple[str, str]:
        """/run on a server file (an upload's path, or an example's value as a click loads it)."""
        if isinstance(sound, str):
            sound = {"path": sound, "orig_name": Path(sound).name, "meta": {"_type": "gradio.FileData"}}
        return self.call("run", [sound, 4, 3.0, seed, 64, images])

    def example(self, index: int) -> dict:
        """Example ``index`` as a click puts it into the sound input: a file on the server."""
        event, data = self.call("load_example", [index])
        assert event == "complete", data
        return json.loads(data)[0]["value"]

    def example_labels(self) -> list[str]:
        components = self.http.get("config").json()["components"]
        return [label for c in components if c["props"].get("elem_id") == "examples"
                for label in c["props"]["sample_labels"]]

    def upload_and_run(self, path: Path) -> tuple[str, str]:
        response = self.upload(path)
        response.raise_for_status()
        return self.run(response.json()[0])


def _png(data: bytes, size: int = 128) -> np.ndarray:
    """The pixels of a valid, non-blank PNG of ``size`` (the project's render.size) squared."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.size == (size, size)
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 0
    return pixels


@needs_chromium
def test_upload_a_wav_and_get_an_image(app_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    wav = _sound(tmp_path / "bell.wav", "bell")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(app_server.url)
        page.locator("input[type=file]").first.set_input_files(str(wav))
        page.get_by_role("button", name="Generate").click()
        image = page.locator("#result img").first
        image.wait_for(state="visible", timeout=180_000)  # a liveness bound, not a speed target: CI machines are shared
        src = image.get_attribute("src")
        response = page.request.get(src if src.startswith("http") else app_server.url + src.lstrip("/"))
        data = response.body()
        nearest = page.locator("#nearest").inner_text()
        browser.close()
    _png(data)
    assert "an image of" in nearest


@needs_chromium
def test_click_an_example_make_two_images_and_download_them(app_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(app_server.url)
        page.locator("#examples").get_by_role("button", name="dog", exact=True).click()
        loaded = page.locator("#sound [data-testid=download-link]")  # the player shows once the sound is in
        loaded.wait_for(state="attached", timeout=60_000)
        source = loaded.get_attribute("href")
        page.get_by_label("number input for Images").fill("2")
        playwright.expect(page.get_by_label("range slider for Images")).to_have_value("2", timeout=30_000)
        page.get_by_role("button", name="Generate").click()
        images = page.locator("#result .thumbnail-item img")
        images.nth(1).wait_for(state="visible", timeout=180_000)  # a liveness bound, not a speed target
        captions = [images.nth(i).get_attribute("alt") for i in range(images.count())]
        with page.expect_download(timeout=60_000) as download:
            page.locator("#download").click()
        archive = tmp_path / download.value.suggested_filename
        download.value.save_as(archive)
        browser.close()
    assert source.endswith("/examples/dog.wav"), source  # the app's own short copy, in its private temp dir
    assert captions == ["seed 0", "seed 1"]  # the project's render.seed, then the next: generate's rule
    with zipfile.ZipFile(archive) as bundle:
        assert bundle.namelist() == ["dog-seed0.png", "dog-seed1.png"]
        first, second = (_png(bundle.read(name)) for name in bundle.namelist())
    assert not np.array_equal(first, second)  # two seeds, two images


@needs_chromium
def test_the_page_shows_its_example_sounds(app_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    viewport = {"width": 1280, "height": 720}
    shot = tmp_path / "app.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport=viewport, device_scale_factor=1)
        page.goto(app_server.url)
        examples = page.locator("#examples")
        examples.get_by_role("button", name="siren", exact=True).wait_for(state="visible", timeout=60_000)
        labels = examples.get_by_role("button").all_inner_texts()
        box = examples.bounding_box()
        page.screenshot(path=shot)  # the viewport: what a visitor sees before scrolling
        browser.close()
    where = f"screenshot: {shot}"
    # The demo's eight classes, one test clip each, by name.
    assert labels == ["bell", "birds", "clock", "dog", "drums", "engine", "rain", "siren"], where
    assert box is not None and box["width"] > 0 and box["height"] > 0, where
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (box, where)
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (box, where)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", where
    with Image.open(shot) as png:
        assert png.size == (viewport["width"], viewport["height"]), where
        pixels = np.asarray(png.convert("L"), dtype=np.float32)
    assert pixels.std() > 10, where  # a rendered page, not a blank one
    area = pixels[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    assert area.std() > 10, where  # the examples' buttons and labels are drawn there, not an empty patch


def _server_file(href: str) -> Path:
    """The server's file behind a link of the page (``…/gradio_api/file=/path``): the server runs on this machine."""
    return Path(urllib.parse.unquote(href.split("/gradio_api/file=", 1)[1]))


def _size(locator) -> tuple[float, float]:
    box = locator.bounding_box()  # its x and y move as the page scrolls
    return box["width"], box["height"]


@needs_chromium
def test_the_page_keeps_its_sound_and_its_last_good_result(app_server, tmp_path):
    """Another seed needs no new upload; no sound, then a file that is not audio, each give one line under Generate
    (no "Error" badge on the panels), and the last images stay where they were. The page lets a sound go when it is
    replaced or removed, and a refused file at once."""
    playwright = pytest.importorskip("playwright.sync_api")
    # Bytes no other test sends: a page elsewhere holding the same bytes (one server file) would keep it, rightly.
    wav = _sound(tmp_path / "engine.wav", "engine", seconds=2.5)
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio " * 100)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(app_server.url)
        sound = page.locator("#sound [data-testid=download-link]")  # the player shows while the input holds one
        generate, status, image = (page.get_by_role("button", name="Generate"), page.locator("#status"),
                                   page.locator("#result img").first)

        def upload(path: Path) -> Path:
            page.locator("#sound input[type=file]").set_input_files(str(path))
            sound.wait_for(state="attached", timeout=60_000)
            return _server_file(sound.get_attribute("href"))

        uploaded = upload(wav)
        generate.click()
        image.wait_for(state="visible", timeout=180_000)  # a liveness bound, not a speed target
        first = image.get_attribute("src")
        # The input still holds the sound, and its file is on the server for the next try.
        assert sound.count() == 1 and _server_file(sound.get_attribute("href")) == uploaded and uploaded.is_file()
        page.get_by_label("Seed").fill("5")
        generate.click()  # no upload in between
        playwright.expect(image).not_to_have_attribute("src", first, timeout=180_000)
        second = image.get_attribute("src")
        pngs = [page.request.get(src if src.startswith("http") else app_server.url + src.lstrip("/")).body()
                for src in (first, second)]
        size = _size(page.locator("#result"))
        assert uploaded.is_file()

        page.locator("#sound").get_by_role("button", name="Clear").click()
        sound.wait_for(state="detached", timeout=30_000)
        generate.click()
        playwright.expect(status).to_have_text("⚠️ Upload or record a sound, or pick an example, first.",
                                               timeout=60_000)
        cleared = (image.get_attribute("src"), page.get_by_text("Error", exact=True).count(),
                   _size(page.locator("#result")), uploaded.exists())

        refused_file = upload(junk)
        generate.click()
        playwright.expect(status).to_have_text("⚠️ That file could not be read as audio.", timeout=60_000)
        sound.wait_for(state="detached", timeout=30_000)  # the refused file's input cleared, as the file is gone
        refused = (image.get_attribute("src"), page.get_by_text("Error", exact=True).count(),
                   _size(page.locator("#result")), refused_file.exists())
        shown = image.is_visible()
        browser.close()
    assert first.endswith("/engine-seed0.png") and second.endswith("/engine-seed5.png"), (first, second)
    assert not np.array_equal(*(_png(png) for png in pngs))  # two seeds, two images, one upload
    assert cleared == (second, 0, size, False)  # one line; the last images as they were; the sound let go
    assert refused == (second, 0, size, False) and shown
    assert "Traceback" not in app_server.console()


def test_an_example_serves_every_visitor_and_each_image_has_its_seed(app_server):
    api = Api(app_server.url, login=False)
    assert api.example_labels()[3] == "dog"
    sound = api.example(3)
    example = Path(sound["path"])
    assert example.is_file() and example.is_relative_to(app_server.tmp)
    for _ in range(2):
        event, data = api.run(sound, seed=7, images=3)
        assert event == "complete", data
        gallery, nearest, used, cleared, download = json.loads(data)
        assert example.is_file()  # the app's own: unlike an upload, it stays for the next visitor
    assert [item["caption"] for item in gallery] == ["seed 7", "seed 8", "seed 9"]
    assert (used["seed"], used["images"], cleared) == (7, 3, None)
    assert nearest["data"][0][0].startswith("an image of")
    with zipfile.ZipFile(download["path"]) as bundle:
        assert bundle.namelist() == [f"dog-seed{seed}.png" for seed in (7, 8, 9)]
        for item, name in zip(gallery, bundle.namelist(), strict=True):
            assert bundle.read(name) == Path(item["image"]["path"]).read_bytes()  # the very PNGs the page shows
            with Image.open(item["image"]["path"]) as png:
                assert json.loads(png.info["a2i"])["seed"] == int(name[8:-4])  # how to make it again
    for images, message in [(2.5, f"Images must be a whole number from 1 to {MAX_IMAGES}."),
                            (MAX_IMAGES + 1, f"greater than maximum value {MAX_IMAGES}")]:
        event, data = api.run(sound, images=images)
        assert event == "error" and message in json.loads(data)["error"], data


def test_a_hostile_examples_folder_is_skipped_with_reasons_and_the_app_starts(guarded, hostile):
    _, expected = hostile
    api = Api(guarded.url)
    offered = sorted(name for name, outcome in expected.items() if outcome is None)
    assert api.example_labels() == offered
    console = guarded.console()
    for name, reason in expected.items():
        if reason is not None:
            (line,) = [line for line in console.splitlines() if f"example skipped: {shown_name(name)}: " in line]
            assert reason in line, line
    # A name with spaces, accents and a quote, decoded from FLAC: a sound like any other.
    event, data = api.run(api.example(offered.index("sirène d'été 1.flac")))
    assert event == "complete", data


def test_parallel_requests_each_get_their_own_image(guarded, tmp_path):
    from gradio_client import Client, handle_file

    labels = ["bell", "dog", "siren"]
    # Each sound twice, with two seeds: at once, both uploads of a sound share one server file.
    jobs = [(_sound(tmp_path / f"{label}.wav", label), seed) for label in labels for seed in (1, 2)]

    def client() -> Client:
        return Client(guarded.url, auth=(USER, PASSWORD), verbose=False, download_files=str(tmp_path / "downloads"))

    def ask(job: tuple[Path, int], session: Client) -> np.ndarray:
        (image,), _, used, _, _ = session.predict(handle_file(str(job[0])), 4, 3.0, job[1], 64, 1, api_name="/run")
        assert used["seed"] == job[1]
        with Image.open(image["image"]) as png:
            return np.asarray(png.convert("RGB"))

    one = client()
    expected = [ask(job, one) for job in jobs]
    for i in range(len(jobs)):  # distinct inputs give distinct images, so a mix-up could not go unseen
        for j in range(i):
            assert not np.array_equal(expected[i], expected[j]), (jobs[i], jobs[j])

    start = threading.Barrier(len(jobs))

    def ask_together(job: tuple[Path, int]) -> np.ndarray:
        own = client()  # one per thread, as separate users would have
        start.wait(timeout=60)  # every client connected: the requests really overlap
        return ask(job, own)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask_together, jobs))
    for job, want, got in zip(jobs, expected, answers, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=f"{job}: another request's image, or a corrupted one")
    assert "Traceback" not in guarded.console()


def _assert_clean(text: str, server: Server) -> None:
    assert "Traceback" not in text and str(server.tmp) not in text and "/tmp" not in text, text


def test_over_size_over_long_and_unreadable_uploads_are_refused_in_one_line(guarded, tmp_path):
    api = Api(guarded.url)
    big = _noise(tmp_path / "big.wav", 40)  # 1.28 MB of 16-bit PCM, over the 1 MB limit
    refused = api.upload(big)
    assert refused.status_code == 413
    _assert_clean(refused.text, guarded)

    (tmp_path / "junk.wav").write_bytes(b"this is not audio " * 100)
    write_wav(tmp_path / "silent.wav", np.zeros(16_000, np.float32))
    cases = {
        _noise(tmp_path / "long.wav", 8): "The sound is longer than the 0.1-minute limit.",
        tmp_path / "junk.wav": "That file could not be read as audio.",
        tmp_path / "silent.wav": "The sound is silent: there is nothing to hear.",
    }
    before = guarded.console().count("refused")
    for path, message in cases.items():
        event, data = api.upload_and_run(path)
        assert (event, json.loads(data)["error"]) == ("error", message), data
        _assert_clean(data, guarded)
    console = guarded.console()
    assert console.count("refused") - before == len(cases)  # one line each
    assert "Traceback" not in console


def test_an_upload_is_deleted_once_its_request_is_done(guarded, tmp_path):
    api = Api(guarded.url)
    uploaded = api.upload(_sound(tmp_path / "dog.wav", "dog"))
    uploaded.raise_for_status()
    (server_path,) = uploaded.json()
    assert Path(server_path).is_file() and Path(server_path).is_relative_to(guarded.tmp)
    event, data = api.run(server_path)
    assert event == "complete", data
    (image,), nearest, used, sound, download = json.loads(data)
    assert "an image of" in nearest["data"][0][0] and sound is None  # a client's upload is gone: so says /run
    assert Path(image["image"]["path"]).is_file() and Path(download["path"]).is_file()  # kept to be shown
    assert not Path(server_path).exists()
    event, data = api.run(server_path)  # the page still holds the old reference: say so, plainly
    assert event == "error"
    assert json.loads(data)["error"] == "The sound is no longer on the server: upload or record it again."

    # The same bytes uploaded twice share one server file: it goes when the second request is done, not the first.
    first, second = (api.upload(tmp_path / "dog.wav").json()[0] for _ in range(2))
    assert first == server_path and second == server_path
    assert api.run(first)[0] == "complete" and Path(first).is_file()
    assert api.run(second)[0] == "complete" and not Path(first).exists()


def test_login_is_required_when_auth_is_set(guarded, tmp_path):
    api = Api(guarded.url, login=False)
    assert api.http.get("config").status_code == 401
    assert api.upload(_sound(tmp_path / "bell.wav", "bell")).status_code == 401
    assert api.http.post("gradio_api/call/run", json={"data": [None, 4, 3.0, 1, 64, 1]}).status_code == 401
    assert api.http.post("login", data={"username": USER, "password": "s3cr"}).status_code == 400
    assert api.http.get("config").status_code == 401
    api.http.post("login", data={"username": USER, "password": PASSWORD}).raise_for_status()
    assert api.http.get("config").status_code == 200


@needs_chromium
def test_the_page_asks_for_a_login(guarded):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(guarded.url)
        page.get_by_label("username").fill(USER)
        page.get_by_label("password").fill(PASSWORD)
        assert page.get_by_role("button", name="Generate").count() == 0
        page.get_by_role("button", name="Login").click()
        page.get_by_role("button", name="Generate").wait_for(timeout=30_000)
        browser.close()


def test_stopping_the_server_removes_every_file_it_wrote(demo_workspace, tmp_path):
    server = _app(demo_workspace[0], tmp_path / "server")
    try:
        api = Api(server.url, login=False)
        uploaded = api.upload(_sound(tmp_path / "rain.wav", "rain")).json()[0]
        event, data = api.run(uploaded, images=2)
        assert event == "complete", data
        (private,) = server.tmp.glob("a2i-app-*")
        assert len(list(private.rglob("*.png"))) == 2 and list(private.rglob("*.zip"))  # kept while it runs
        assert len(list((private / "examples").glob("*.wav"))) == 8  # the project's example sounds
        assert not Path(uploaded).exists()  # the upload, gone already
    finally:
        console = server.stop()
    assert server.process.returncode == 0, console[-2000:]
    left = sorted(p.name for p in server.tmp.iterdir() if p.name.startswith(("a2i-app-", "gradio")))
    assert left == [], left
    assert "Traceback" not in console


# Gradio's own queue code, run in this process here, warns about pandas options it uses.
@pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
def test_the_sweep_takes_results_and_downloads_and_leaves_the_examples(demo_workspace, tmp_path, monkeypatch):
    """Gradio's delete_cache sweep (every 10 minutes, files older than 10 minutes), run here at once with age 0, on
    the app as build_app makes it (no upload counter: each request deletes its input unless it is an example). The
    sweep deletes files only: the next result removes the folders it emptied."""
    from gradio.route_utils import delete_files_created_by_app

    project, temp = demo_workspace[0], tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))  # as serve sets it, before the app is built
    examples = project_examples(project / "data" / "candidates.parquet", project / "data" / "audio",
                                temp / "examples")
    render = load_params(project / "params.yaml").render
    models = project / "models"
    generator = SoundToImage.from_pretrained(models / "mapper", models / "audio_encoder", models / "sd3",
                                             torch.device("cpu"), "float32")
    app = build_app(generator, RenderSettings.from_params(render), SequenceFill.from_params(render), examples=examples)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               show_error=False)
    try:
        api = Api(app.local_url, login=False)
        event, data = api.run(api.example(0), images=2)
        assert event == "complete", data
        gallery, _, _, _, download = json.loads(data)
        made = [Path(item["image"]["path"]) for item in gallery] + [Path(download["path"])]
        assert all(path.is_relative_to(temp) and path.is_file() for path in made)
        delete_files_created_by_app(app, age=0)
        assert [path for path in made if path.exists()] == []
        assert all(example.path.is_file() for example in examples)  # an example outlives any sweep
        (swept,) = {path.parent for path in made}
        assert swept.name.startswith("result-") and swept.is_dir()  # emptied, not removed, by Gradio
        event, data = api.run(api.example(0))
        assert event == "complete", data
        (item,), _, _, _, download = json.loads(data)
        kept = Path(item["image"]["path"]).parent
        assert not swept.exists()  # the empty folder went when the next result was saved
        assert kept.is_dir() and Path(download["path"]).parent == kept
        assert sorted(temp.glob("result-*")) == [kept]
    finally:
        app.close()


def test_check_sound_limits(tmp_path):
    ok = _noise(tmp_path / "ok.wav", 5.5)
    assert check_sound(ok, max_upload_mb=1, max_minutes=0.1) == pytest.approx(5.5, abs=0.01)
    with pytest.raises(SoundRefused, match=r"^The file is larger than the 0\.1 MB limit\.$"):
        check_sound(ok, max_upload_mb=0.1, max_minutes=0.1)  # 176 kB
    long = _noise(tmp_path / "long.wav", 30)
    start = time.monotonic()
    with pytest.raises(SoundRefused, match=r"^The sound is longer than the 0\.2-minute limit\.$"):
        check_sound(long, max_upload_mb=1, max_minutes=0.2)
    assert time.monotonic() - start < 10
    with pytest.raises(SoundRefused, match="no longer on the server"):
        check_sound(tmp_path / "gone.wav")


def test_parse_auth():
    assert parse_auth("alice:s3cr:et") == ("alice", "s3cr:et")
    for bad in ["alice", "alice:", ":pw", " :pw", ""]:
        with pytest.raises(A2IError) as err:
            parse_auth(bad)
        assert str(err.value) == "--auth takes USER:PASSWORD, both non-empty"  # the value itself is never echoed


def test_listening_beyond_the_loopback_is_warned_about():
    for host in ["127.0.0.1", "localhost", "::1"]:
        assert exposure_warning(host, None) is None
    assert "WITHOUT --auth" in exposure_warning("0.0.0.0", None)
    assert "WITHOUT" not in exposure_warning("0.0.0.0", ("a", "b"))
    assert "unencrypted" in exposure_warning("0.0.0.0", ("a", "b"))


def test_project_examples_are_offered_on_the_loopback_only(tmp_path, caplog):
    """The project's own clips may be private: a --host that other machines reach offers them only when --examples
    names a folder (the decision `a2i app` takes before it loads a model or listens anywhere)."""
    from a2i_core.cli import _example_maker

    project, folder = tmp_path / "project", tmp_path / "mine"
    folder.mkdir()
    for host in ["127.0.0.1", "localhost", "::1"]:
        maker = _example_maker(project, None, False, host)
        assert maker.func.__name__ == "project_examples"
        assert maker.args == (project / "data" / "candidates.parquet", project / "data" / "audio")
    with caplog.at_level(logging.INFO, logger="a2i_core.cli"):
        assert _example_maker(project, None, False, "0.0.0.0") is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "a2i_core.cli"]
    assert "not offered on --host 0.0.0.0" in line and "--examples DIR" in line
    for host in ["0.0.0.0", "127.0.0.1"]:
        maker = _example_maker(project, folder, False, host)  # asked for by name: offered wherever it listens
        assert (maker.func.__name__, maker.args) == ("folder_examples", (folder,))
        assert _example_maker(project, None, True, host) is None


def test_examples_that_fail_in_any_way_never_stop_the_start(tmp_path, caplog):
    def broken(out: Path):
        raise ValueError("Parquet magic bytes not found in footer.\nEither the file is corrupted")

    with caplog.at_level(logging.WARNING, logger="a2i_core.serve.app"):
        assert _make_examples(broken, tmp_path) == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "a2i_core.serve.app"]
    assert line == "no example sounds: ValueError: Parquet magic bytes not found in footer."


@pytest.mark.parametrize("options, message", [
    (["--examples", "{tmp}/nowhere"], "error: --examples {tmp}/nowhere: not a folder"),
    (["--examples", "{tmp}", "--no-examples"], "error: --examples and --no-examples: give one or the other"),
])
def test_the_examples_options_are_checked_before_any_model_loads(tmp_path, options, message):
    from typer.testing import CliRunner

    from a2i_core.cli import app

    # --project is empty: had the models' loading come first, it would have said so instead.
    result = CliRunner().invoke(app, ["app", "--project", str(tmp_path),
                                      *(o.format(tmp=tmp_path) for o in options)])
    assert result.exit_code == 1 and result.output.strip() == message.format(tmp=tmp_path), result.output


def test_without_examples_the_page_has_no_examples_section():
    # The generator is only used by /run.
    app = build_app(None, RenderSettings(4, 3.0, 64, 0, 1), SequenceFill("empty_prompt"))
    ids = [c.get("props", {}).get("elem_id") for c in app.get_config_file()["components"]]
    assert "sound" in ids and "examples" not in ids
