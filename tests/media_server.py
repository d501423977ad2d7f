"""A small HTTP media server for download tests: Range requests (206), scripted failures, loopback only.

Python's http.server ignores Range, and ffmpeg needs ranges to seek into media; this one honours them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MediaServer:
    """Serves files from ``root`` at /media/<name>. ``fail[name]`` is a list of status codes to answer first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fail: dict[str, list[int]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                server.requests.append(name)
                codes = server.fail.get(name)
                if codes:
                    self.send_response(codes.pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = server.root / name
                if not self.path.startswith("/media/") or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, end = 0, len(data) - 1
                match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = int(match.group(2)) if match.group(2) else end
                    else:  # a suffix range: the last N bytes
                        start = max(0, len(data) - int(match.group(2)))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start : end + 1]
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # ffmpeg hangs up early
                        self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/media/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
