"""`a2i app` end to end: a real headless browser (Debian's chromium, driven by Playwright), and the server under real
use: parallel requests, upload limits, upload and temp-file cleanup, short errors, login."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from a2i_core.app import SoundRefused, check_sound, exposure_warning, parse_auth
from a2i_core.audio import write_wav
from a2i_core.errors import A2IError
from a2i_core.sources.synthetic import clip_specs, synthesize
from a2i_core.workspace import tool_env

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="needs Debian's chromium (.ci/run installs it)")
USER, PASSWORD = "alice", "s3cr:et"  # a ':' in the password: only the first one separates
# serve() as the CLI's `app` command calls it, with limits small enough to test quickly.
SERVE = """
import sys
from pathlib import Path
import torch
from a2i_core.app import serve
from a2i_core.errors import setup_logging
from a2i_core.generate import SoundToImage
from a2i_core.params import load_params
from a2i_core.render import RenderSettings

setup_logging()
project, port, limits, auth = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
render = load_params(project / "params.yaml").render
models = project / "models"
generator = SoundToImage.from_pretrained(models / "mapper", models / "vggish", models / "sd3", torch.device("cpu"),
                                         "float32")
extra = {"auth": tuple(auth.split(":", 1))} if auth else {}
if limits:
    extra.update(zip(["max_upload_mb", "max_minutes"], map(float, limits.split(","))))
serve(generator, RenderSettings.from_params(render), render.sequence_fill, "127.0.0.1", port, **extra)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
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


def _serve(project: Path, root: Path, limits: str = "", auth: str = "", **env: str) -> Server:
    return _launch(lambda port: [sys.executable, "-c", SERVE, str(project), str(port), limits, auth], root, **env)


@pytest.fixture
def app_server(demo_workspace, tmp_path):
    server = _launch(lambda port: [sys.executable, "-m", "a2i_core.cli", "app", "--project", str(demo_workspace[0]),
                                   "--port", str(port), "--device", "cpu"], tmp_path / "server")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded(demo_workspace, tmp_path_factory):
    """One server for the limits, parallel and login tests: 1 MB, 0.1 minute (6 s), a login, and Gradio's default
    concurrency raised to 8, the setting under which the unguarded generator mixed up requests."""
    server = _serve(demo_workspace[0], tmp_path_factory.mktemp("guarded"), "1,0.1", f"{USER}:{PASSWORD}",
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

    def run(self, server_path: str, seed: int = 1) -> tuple[str, str]:
        """(event, data) of one /run call, as sent: "complete" and the outputs' JSON, or "error" and the error's."""
        sound = {"path": server_path, "orig_name": Path(server_path).name, "meta": {"_type": "gradio.FileData"}}
        started = self.http.post("gradio_api/call/run", json={"data": [sound, 4, 3.0, seed, 64]})
        started.raise_for_status()
        stream = self.http.get(f"gradio_api/call/run/{started.json()['event_id']}").text
        events = [block.split("\n", 1) for block in stream.strip().split("\n\n")]
        event, data = events[-1]
        return event.removeprefix("event: "), data.removeprefix("data: ")

    def upload_and_run(self, path: Path) -> tuple[str, str]:
        response = self.upload(path)
        response.raise_for_status()
        return self.run(response.json()[0])


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
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.size == (64, 64)  # the project's render.size
        assert np.asarray(png).std() > 0
    assert "an image of" in nearest


def test_parallel_requests_each_get_their_own_image(guarded, tmp_path):
    from gradio_client import Client, handle_file

    labels = ["bell", "dog", "siren"]
    # Each sound twice, with two seeds: at once, both uploads of a sound share one server file.
    jobs = [(_sound(tmp_path / f"{label}.wav", label), seed) for label in labels for seed in (1, 2)]

    def client() -> Client:
        return Client(guarded.url, auth=(USER, PASSWORD), verbose=False, download_files=str(tmp_path / "downloads"))

    def ask(job: tuple[Path, int], session: Client) -> np.ndarray:
        image_path, _, used, _ = session.predict(handle_file(str(job[0])), 4, 3.0, job[1], 64, api_name="/run")
        assert used["seed"] == job[1]
        with Image.open(image_path) as png:
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
    image, nearest, used, sound = json.loads(data)
    assert "an image of" in nearest["data"][0][0] and sound is None  # the page's input is cleared too
    assert Path(image["path"]).is_file()  # the result stays, to be shown, until the server stops
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
    assert api.http.post("gradio_api/call/run", json={"data": [None, 4, 3.0, 1, 64]}).status_code == 401
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
    server = _serve(demo_workspace[0], tmp_path / "server")
    try:
        event, data = Api(server.url, login=False).upload_and_run(_sound(tmp_path / "rain.wav", "rain"))
        assert event == "complete", data
        (private,) = server.tmp.glob("a2i-app-*")
        assert list(private.rglob("*.png"))  # the result, kept while the server runs
        assert not list(private.rglob("*.wav"))  # the upload, gone already
    finally:
        console = server.stop()
    assert server.process.returncode == 0, console[-2000:]
    left = sorted(p.name for p in server.tmp.iterdir() if p.name.startswith(("a2i-app-", "gradio")))
    assert left == [], left
    assert "Traceback" not in console


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
