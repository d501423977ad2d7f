"""`a2i app` end to end in a real headless browser: Debian's chromium, driven by Playwright."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from a2i_core.audio import write_wav
from a2i_core.sources.synthetic import clip_specs, synthesize
from a2i_core.workspace import tool_env

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_server(demo_workspace):
    port = _free_port()
    env = {**tool_env(), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    server = subprocess.Popen([sys.executable, "-m", "a2i_core.cli", "app", "--project", str(demo_workspace[0]),
                               "--port", str(port), "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"the app exited: {server.stdout.read()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the app did not answer within 90 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")
def test_upload_a_wav_and_get_an_image(app_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    wav = tmp_path / "bell.wav"
    write_wav(wav, synthesize(next(iter(clip_specs(["bell"], 1, 2.0, 2.0, 3).values()))))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(app_server)
        page.locator("input[type=file]").first.set_input_files(str(wav))
        page.get_by_role("button", name="Generate").click()
        image = page.locator("#result img").first
        image.wait_for(state="visible", timeout=60_000)
        src = image.get_attribute("src")
        response = page.request.get(src if src.startswith("http") else app_server.rstrip("/") + "/" + src.lstrip("/"))
        data = response.body()
        nearest = page.locator("#nearest").inner_text()
        browser.close()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.size == (64, 64)  # the project's render.size
        assert np.asarray(png).std() > 0
    assert "an image of" in nearest
