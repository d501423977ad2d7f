"""The web app against a hostile client: crafted file paths (the file route and the API's audio argument), requests
Gradio's own inputs refuse, and a password guesser. A real server (`serve`, as `a2i app` runs it) without models:
every refusal here comes before a generation would, so none is loaded and the server starts in seconds."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from a2i_core.core.audio_io import write_wav
from a2i_core.serve.guards import LOGIN_NOTE, MALFORMED, NOT_AN_UPLOAD, LoginThrottle, client_key
from tests.serve.test_app import PASSWORD, USER, Api, Server, _launch

# The throttle's constants made small, so the login test waits one second; the policy is LoginThrottle's.
FREE_FAILURES, FIRST_WAIT_S, MAX_WAIT_S = 3, 1.0, 2.0
SERVER = f"""
import functools, sys
import a2i_core.serve.app as app
from a2i_core.core.errors import setup_logging
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.examples import folder_examples
from a2i_core.serve.guards import LoginThrottle

app.LoginThrottle = functools.partial(LoginThrottle, free_failures={FREE_FAILURES}, first_wait_s={FIRST_WAIT_S},
                                      max_wait_s={MAX_WAIT_S})
setup_logging()
app.serve(None, RenderSettings(4, 3.0, 64, 0, 1), SequenceFill("empty_prompt"), "127.0.0.1", int(sys.argv[1]),
          max_upload_mb=1, max_minutes=0.1, auth=({USER!r}, {PASSWORD!r}),
          examples=functools.partial(folder_examples, __import__("pathlib").Path(sys.argv[2])))
"""


def _noise(path: Path, seed: int) -> Path:
    """Two seconds of noise; each seed its own bytes, so each upload its own server file."""
    write_wav(path, 0.1 * np.random.default_rng(seed).standard_normal(32_000).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-app")
    examples = root / "examples"
    examples.mkdir()
    _noise(examples / "hiss.wav", 0)
    server = _launch(lambda port: [sys.executable, "-c", SERVER, str(port), str(examples)], root / "server")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(server) -> Api:
    return Api(server.url)


def _new_lines(server: Server, before: int, wait_s: float = 5.0) -> list[str]:
    """The console lines written since it had ``before`` lines, once one has come and a moment has passed."""
    deadline = time.monotonic() + wait_s
    while len(server.console().splitlines()) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a second line, had there been one, would be there by now
    return server.console().splitlines()[before:]


def _raw_get(server: Server, target: str, cookies: dict[str, str]) -> int:
    """GET ``target`` byte for byte (an HTTP client would resolve its '..' itself); the status."""
    host, port = server.url.removeprefix("http://").strip("/").split(":")
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
                  .encode("latin-1"))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _file(path: object) -> dict:
    return {"path": path, "orig_name": "x.wav", "meta": {"_type": "gradio.FileData"}}


def _run(api: Api, sound: object, images: object = 1, size: object = 64) -> tuple[str, str]:
    return api.call("run", [sound, 4, 3.0, 1, size, images])


@pytest.mark.parametrize("target", [
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=../../../../../../etc/passwd",
    "/gradio_api/file/etc/passwd",
    "/gradio_api/file=/proc/self/environ",
    "/gradio_api/file=%00",
    "/gradio_api/file=%0aerror:%20forged",  # a newline must not forge a line of its own
    "/gradio_api/file=" + "a" * 5000,
])
def test_a_crafted_file_request_is_one_console_line(server, api, target):
    before = len(server.console().splitlines())
    status = _raw_get(server, target, dict(api.http.cookies))
    lines = _new_lines(server, before)
    assert status in (403, 404)
    assert len(lines) == 1 and "refused a file request" in lines[0] and len(lines[0]) < 400, lines


@pytest.mark.parametrize("sound", [
    _file("/etc/passwd"),
    _file("../../../../../../etc/passwd"),
    _file("http://127.0.0.1:9/sound.wav"),  # Gradio would fetch a URL before it checked it
    _file(5),
    _file("\x00"),
    _file("/etc/passwd\nerror: forged"),
    {"path": "/etc/passwd"},  # no meta: Gradio would not even call it a file
    [_file("/etc/passwd")],
])
def test_a_crafted_audio_argument_is_one_console_line(server, api, sound):
    before = len(server.console().splitlines())
    event, data = _run(api, sound)
    lines = _new_lines(server, before)
    assert (event, json.loads(data)["error"]) == ("error", NOT_AN_UPLOAD), data
    assert len(lines) == 1 and "refused a request to /run: a file outside the app's folder" in lines[0], lines


def test_an_upload_path_escaping_the_folder_is_refused(server, api, tmp_path):
    (uploaded,) = api.upload(_noise(tmp_path / "a.wav", 1)).json()
    before = len(server.console().splitlines())
    event, data = _run(api, _file(f"{uploaded}/../../../../etc/passwd"))
    assert (event, json.loads(data)["error"]) == ("error", NOT_AN_UPLOAD)
    assert len(_new_lines(server, before)) == 1
    assert Path(uploaded).is_file()  # named only as a way out: not this request's upload


@pytest.mark.parametrize("case", ["images", "size", "no meta", "too few inputs", "load_example"])
def test_an_upload_gradio_refuses_is_removed_at_once(server, api, tmp_path, case):
    (uploaded,) = api.upload(_noise(tmp_path / f"{case}.wav", 2 + len(case))).json()
    assert Path(uploaded).is_file()
    before = len(server.console().splitlines())
    expected = {
        "images": "Value 5 is greater than maximum value 4.",
        "size": "Value: 65 is not in the list of choices: [64, 128, 256, 512, 768, 1024]",
        "no meta": MALFORMED,
        "too few inputs": MALFORMED,
        "load_example": MALFORMED,
    }[case]
    if case == "images":
        event, data = _run(api, _file(uploaded), images=5)
    elif case == "size":
        event, data = _run(api, _file(uploaded), size=65)
    elif case == "no meta":
        event, data = _run(api, {"path": uploaded})
    elif case == "too few inputs":
        event, data = api.call("run", [_file(uploaded)])
    else:  # an index past the examples, beside an upload
        event, data = api.call("load_example", [{"index": 99, **_file(uploaded)}])
    assert (event, json.loads(data)["error"]) == ("error", expected), data
    assert not Path(uploaded).exists()  # right after the answer, not ten minutes later at the sweep
    lines = _new_lines(server, before)
    assert len(lines) == 1 and "refused a request to /" in lines[0], lines


def test_a_refused_request_never_removes_an_example(server, api):
    example = api.example(0)
    event, data = _run(api, example, images=5)
    assert event == "error", data
    assert Path(example["path"]).is_file()
    assert api.example(0)["path"] == example["path"]


def test_no_refusal_printed_a_traceback(server, api):
    # Runs after the tests above (pytest keeps a module's order): the console holds all their refusals.
    console = server.console()
    assert "refused" in console and "Traceback" not in console and "\nerror: forged" not in console


def test_failed_logins_slow_down_and_the_right_password_works_after_the_wait(server):
    guesser = Api(server.url, login=False).http
    assert guesser.get("config").json()["detail"]["auth_message"] == LOGIN_NOTE  # the login page says the rule
    codes = [guesser.post("login", data={"username": USER, "password": f"guess{i}"}).status_code for i in range(10)]
    assert codes == [400] * FREE_FAILURES + [429] * (10 - FREE_FAILURES)
    early = guesser.post("login", data={"username": USER, "password": PASSWORD})
    assert early.status_code == 429  # the right password too: otherwise a guesser would learn it as fast as ever
    assert early.headers["Retry-After"] == "1" and "try again in 1 s" in early.json()["detail"]
    assert guesser.get("config").status_code == 401
    time.sleep(FIRST_WAIT_S)
    guesser.post("login", data={"username": USER, "password": PASSWORD}).raise_for_status()
    assert guesser.get("config").status_code == 200
    # A success forgives the failures: a mistyped password right after gets its free tries again.
    assert guesser.post("login", data={"username": USER, "password": "typo"}).status_code == 400
    guesser.post("login", data={"username": USER, "password": PASSWORD}).raise_for_status()
    (line,) = [line for line in server.console().splitlines() if "login failed" in line]
    assert f"login failed {FREE_FAILURES} times in a row from '127.0.0.1'" in line


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_login_wait_doubles_up_to_its_cap_and_is_forgotten():
    clock = _Clock()
    throttle = LoginThrottle(free_failures=3, first_wait_s=1.0, max_wait_s=8.0, forget_s=60.0, max_clients=2,
                             clock=clock)
    assert [throttle.admit("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the free tries (each a failure so far)
    waits = []
    for _ in range(6):
        wait = throttle.admit("a")
        assert wait > 0 and throttle.admit("a") == wait  # a try while waiting is refused and not counted
        waits.append(wait)
        clock.now += wait
        assert throttle.admit("a") == 0.0
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert throttle.admit("b") == 0.0  # per client: another address is not held up
    throttle.succeeded("a")
    assert throttle.failures("a") == 0 and throttle.admit("a") == 0.0
    for _ in range(3):
        throttle.admit("b")
    assert throttle.admit("b") > 0
    clock.now += 61.0  # an hour (here a minute) after its last try, a client starts afresh
    assert throttle.admit("b") == 0.0 and throttle.failures("b") == 1
    throttle.admit("c")  # a third address: the table holds two, and drops the one tried longest ago
    assert (throttle.failures("a"), throttle.failures("b"), throttle.failures("c")) == (0, 1, 1)
    assert LoginThrottle().wait_after(10**6) == LoginThrottle().max_wait_s  # no overflow however many


def test_a_login_counts_against_an_address_or_its_ipv6_network():
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    # One IPv6 client holds a /64: rotating through its addresses does not start its count afresh.
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("testclient") == "testclient"
