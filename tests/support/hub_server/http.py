"""HTTP plumbing (standard library only) and the public `HubServer` object."""

from __future__ import annotations

import secrets
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


from .model import RequestRecord, _Request
from .routes import _HubApp

# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing and the public server object.
# --------------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into `_Request`s for the app, and its `_Response`s back into bytes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # an idle keep-alive connection frees its thread after this many seconds
    # Headers and body go out in two writes: with Nagle's algorithm on, the client's delayed ACK costs ~40 ms/request.
    disable_nagle_algorithm = True
    server: _ThreadingServer

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._read_body()  # always drain the body, or the next request on this connection is garbage
        request = _Request(self.command, path, parse_qs(query, keep_blank_values=True), self.headers, body)
        response = self.server.app.handle(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while True:  # ends on the 0-size chunk, or at EOF (readline returns b"" -> size 0)
            size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing each chunk
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):  # optional trailers
            pass
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are in HubServer.requests; don't flood the test output


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True  # never block interpreter exit on a lingering keep-alive connection
    app: _HubApp

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (e.g. its session closed at teardown) is normal; anything else is a server bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            self.app.errors.append(traceback.format_exc())


class HubServer:
    """An in-memory Hugging Face Hub on http://127.0.0.1:<free port>, served from a background thread.

    Attributes (valid once started):
        endpoint: base url, e.g. "http://127.0.0.1:41234" (what HF_ENDPOINT must be).
        token: the one valid token (writes need it, as `Authorization: Bearer <token>`).
        user: the token's user name, the default namespace of `create_repo("name")`.
        requests: the `RequestRecord(method, path, status)` of every request answered so far.
        errors: tracebacks of requests that crashed the server (answered with 500); should stay empty.
        foreign_requests: requests to any other host, refused by `hub_environment`'s guard; should stay empty.
    """

    def __init__(self, *, user: str = "hub-tester", token: str | None = None, host: str = "127.0.0.1"):
        self.user = user
        self.token = token or f"hf_hubserver_{secrets.token_hex(12)}"
        self.host = host
        self.foreign_requests: list[str] = []
        self._app = _HubApp(user=self.user, token=self.token)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("HubServer is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self._app.requests)

    @property
    def errors(self) -> list[str]:
        return list(self._app.errors)

    def start(self) -> HubServer:
        if self._server is not None:
            return self
        self._server = _ThreadingServer((self.host, 0), _Handler)  # port 0: the OS picks a free port
        self._server.app = self._app
        self._app.endpoint = self.endpoint
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="HubServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # returns within one poll_interval
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Server-side view of a repo at a revision (path -> content), for assertions that bypass the client."""
        with self._app._lock:
            commit = self._app.repos[(repo_type, repo_id)].resolve(revision)
            return {path: stored.content for path, stored in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> set[str]:
        """Paths stored through LFS at a revision."""
        with self._app._lock:
            commit = self._app.repos[(repo_type, repo_id)].resolve(revision)
            return {path for path, stored in commit.files.items() if stored.lfs}


