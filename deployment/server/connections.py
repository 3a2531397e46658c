"""Connections that cannot make the server unreachable: uvicorn's h11 protocol with a deadline for a request's headers,
a cap on open connections that closes the longest idle ones, and a quiet accept loop when file descriptors run out.

* A connection must send a request's headers within `request_timeout` seconds of opening (or of its previous answer);
  otherwise it is closed. uvicorn alone waits forever for the first request of a connection (its keep-alive timeout
  starts only after an answer, and any byte cancels it), so idle or half-open connections — a port scanner, a client
  that sends "POST /translate HTTP/1.1\r\n" and stops — would accumulate. The body has the same deadline, in
  validation.py (408).
* At most `max_connections` connections are open: a new one beyond closes the longest idle ones (no request in
  progress), so a flood of idle connections costs the oldest of them their place, never a working client its answer.
  `raise_file_limit` lifts the soft RLIMIT_NOFILE to what that needs (within the hard limit), and `max_connections`
  is lowered to fit the descriptors there are.
* If accept() still fails for lack of descriptors (EMFILE: other processes' sockets, a low hard limit), asyncio would
  log a traceback per retry; `GuardedServer` logs one line at most every 10 s instead and closes idle connections to
  make room.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

RESERVED_FILES = 256  # descriptors kept for the model, pipes to the workers, logs, the listening socket
EVICT_AT_ONCE = 0.01  # when over the cap, close this share of the cap (at least one): one sort per many connections
OUT_OF_FILES = "socket.accept() out of system resource"


def raise_file_limit(connections: int) -> int:
    """Raise the soft limit of open files to fit `connections` (within the hard limit); returns the connections that
    fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError) as error:
            logger.warning("cannot raise the open-file limit to %d: %s", new, error)
    fits = connections if soft == resource.RLIM_INFINITY else min(connections, max(soft - RESERVED_FILES, 16))
    if fits < connections:
        logger.warning("--max_connections %d lowered to %d: the open-file limit is %d (ulimit -n)", connections, fits,
                       soft)
    return fits


def guarded_protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the header deadline and the connection cap (see the module docstring)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.last_active = time.monotonic()
            self.header_timer = None
            self.watch()
            over = len(self.connections) - len(CLOSING) - max_connections  # (closed ones leave on the next turn)
            if over > 0:
                close_idle(self.connections, over, keep=self, at_once=max(1, int(max_connections * EVICT_AT_ONCE)))

        def connection_lost(self, exc) -> None:
            self.stop_timer()
            CLOSING.discard(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self.last_active = time.monotonic()
            super().data_received(data)
            self.watch()

        def on_response_complete(self) -> None:
            self.last_active = time.monotonic()
            super().on_response_complete()
            self.watch()

        def idle(self) -> bool:
            """No request in progress: waiting for (the rest of) a request's headers."""
            return self.cycle is None or self.cycle.response_complete

        def watch(self) -> None:
            if not self.idle():
                self.stop_timer()
            elif self.header_timer is None and not self.transport.is_closing():
                self.header_timer = self.loop.call_later(request_timeout, self.headers_late)

        def stop_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.idle() and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


CLOSING: set = set()  # connections closed here whose connection_lost has not come yet (one server per process)


def close_idle(connections, count: int, keep=None, at_once: int = 1) -> int:
    """Close the `max(count, at_once)` longest idle connections (not `keep`); returns how many were closed."""
    idle = sorted((c for c in connections if c is not keep and getattr(c, "idle", lambda: False)()
                   and c not in CLOSING and not c.transport.is_closing()), key=lambda c: c.last_active)
    victims = idle[:max(count, at_once)]
    for connection in victims:
        CLOSING.add(connection)
        connection.transport.close()
    return len(victims)


class GuardedServer(uvicorn.Server):
    """uvicorn's server whose event loop reports running out of file descriptors in one line at most every 10 s
    (not a traceback per accept retry) and closes idle connections to make room."""

    async def startup(self, sockets=None) -> None:
        loop = asyncio.get_running_loop()
        default = loop.get_exception_handler()
        last = [0.0]

        def handler(loop, context):
            if context.get("message") != OUT_OF_FILES:
                return default(loop, context) if default else loop.default_exception_handler(context)
            closed = close_idle(self.server_state.connections, 1, at_once=max(1, len(self.server_state.connections)
                                                                               // 100))
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                logger.warning("out of file descriptors accepting a connection (%s; %d open): closed %d idle "
                               "connection(s); accepting again in 1 s", context.get("exception"),
                               len(self.server_state.connections), closed)

        loop.set_exception_handler(handler)
        await super().startup(sockets)
