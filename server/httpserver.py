"""The backend's HTTP server: Tornado's HTTPServer with the limits an exposed payment API needs.

What it adds to Tornado's server (whose defaults let a connection idle or trickle its
headers for an hour):

- timeouts: a new connection must complete its first request head within
  `header_timeout`; a kept-alive connection must complete its next request head within
  `idle_timeout` (Tornado's header timeout); a body must arrive within `body_timeout`;
- a cap on open connections (`max_connections`, by default well below the descriptor
  limit). At the cap, the connection that has waited longest for a request head (idle
  keep-alive, or a slow client) is closed to make room, as nginx reuses its idle
  connections; only when every connection is busy in a request is the new one refused;
- descriptor exhaustion at accept() (EMFILE and kin) pauses accepting briefly and is
  logged at most once a minute, instead of a traceback on every loop pass;
- Tornado's own error answers in the API's JSON shape: its bare "400 Bad Request"
  (malformed request line, headers or body framing) becomes a JSON 400, and a request
  head over `MAX_HEADER_BYTES` gets a JSON 431 instead of a silent close. Both say
  `Connection: close`.

Everything is per process; nothing here blocks the IOLoop.
"""
import errno
import json
import logging
import resource
import sys
import time
from dataclasses import dataclass

import tornado.concurrent
import tornado.httpserver
import tornado.iostream
from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.log import app_log

log = logging.getLogger("server.http")

MAX_HEADER_BYTES = 16 * 1024      # a request line and headers; nginx's default buffers are 4 x 8 KiB
MAX_BODY_BYTES = 1024 * 1024      # hard cap; every handler enforces its own, smaller one
ACCEPT_PAUSE = 0.1                # seconds without accept() after descriptors ran out
REPORT_EVERY = 60.0               # seconds between two log lines about the same limit
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0   # accept -> first request head complete
    idle_timeout: float = 75.0     # keep-alive: end of an answer -> next request head complete
    body_timeout: float = 30.0     # request head -> body complete
    max_connections: int = 0       # 0: default_max_connections()


def descriptor_limit():
    """The process's soft RLIMIT_NOFILE (None when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def descriptor_reserve(limit):
    """Descriptors kept for everything but client connections: the database (3 files),
    upstream connections to WeChat, the listening sockets, logs, the event loop."""
    return max(64, limit // 8)


def default_max_connections(limit=None):
    limit = descriptor_limit() if limit is None else limit
    if limit is None:
        return 10000
    return max(16, min(10000, limit - descriptor_reserve(limit)))


def json_response(status, reason, code, message):
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s") % (status, reason.encode(), len(body), body)


_TORNADO_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"   # what HTTP1Connection writes on HTTPInputError
_JSON_400 = json_response(400, "Bad Request", "BAD_REQUEST",
                          "malformed HTTP request (request line, headers or body framing)")
_JSON_431 = json_response(431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE",
                          "request line and headers over %d bytes" % MAX_HEADER_BYTES)


class RateLimitedLog:
    """A warning at most once per `every` seconds; the next one says how many were held back."""

    def __init__(self, logger, every=REPORT_EVERY, clock=time.monotonic):
        self.logger, self.every, self.clock = logger, every, clock
        self._next, self._held = 0.0, 0

    def warning(self, message, *args):
        now = self.clock()
        if now < self._next:
            self._held += 1
            return False
        if self._held:
            message += " (and %d more times since the last report)" % self._held
        self.logger.warning(message, *args)
        self._next, self._held = now + self.every, 0
        return True


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """HTTPServer(app, limits=Limits(...), xheaders=...): see the module docstring."""

    def initialize(self, request_callback, limits=Limits(), **kwargs):
        kwargs.setdefault("max_header_size", MAX_HEADER_BYTES)
        kwargs.setdefault("max_body_size", MAX_BODY_BYTES)
        super().initialize(request_callback, idle_connection_timeout=limits.idle_timeout,
                           body_timeout=limits.body_timeout, **kwargs)
        self.limits = limits
        self.max_connections = limits.max_connections or default_max_connections()
        self._open = {}   # IOStream -> _Connection, every connection this server holds
        self._limit_log = RateLimitedLog(log)
        self._descriptor_log = RateLimitedLog(log)

    @property
    def open_connections(self):
        return len(self._open)

    # -- accepting ---------------------------------------------------------------
    def add_sockets(self, sockets):
        super().add_sockets([_ListeningSocket(sock, self) for sock in sockets])

    def _handle_connection(self, connection, address):
        # TCPServer's, with our stream class (plain TCP only: the backend does not do TLS)
        if self.ssl_options is not None:
            return super()._handle_connection(connection, address)
        try:
            stream = _ServerStream(connection, max_buffer_size=self.max_buffer_size,
                                   read_chunk_size=self.read_chunk_size)
            self.handle_stream(stream, address)
        except Exception:
            app_log.error("Error in connection callback", exc_info=True)

    def out_of_descriptors(self, sock, exc):
        """accept() failed for want of descriptors: make room, stop accepting for a moment."""
        self._descriptor_log.warning("cannot accept connections: %s (%d open, descriptor limit %s); "
                                     "closing idle ones and pausing accept for %.1fs",
                                     exc.strerror or exc, len(self._open), descriptor_limit(), ACCEPT_PAUSE)
        self._evict(max(1, len(self._open) // 16))
        loop = IOLoop.current()
        loop.update_handler(sock.fileno(), 0)

        def resume():
            if sock.fileno() != -1:   # not closed by stop() meanwhile
                loop.update_handler(sock.fileno(), IOLoop.READ)
        loop.call_later(ACCEPT_PAUSE, resume)

    # -- connections ---------------------------------------------------------------
    def handle_stream(self, stream, address):
        if len(self._open) >= self.max_connections and not self._evict(1):
            self._limit_log.warning("connection limit %d reached and every connection is busy "
                                    "in a request: refusing new connections", self.max_connections)
            stream.close()
            return
        loop = IOLoop.current()
        conn = self._open[stream] = _Connection(stream, loop.time())
        conn.deadline = loop.call_later(self.limits.header_timeout, self._first_head_due, stream)
        super().handle_stream(stream, address)

    def _first_head_due(self, stream):
        conn = self._open.get(stream)
        if conn is not None and conn.heads == 0:
            stream.close()

    def _evict(self, count):
        """Close up to `count` connections, those waiting longest for a request head first.
        Returns how many were closed."""
        waiting = sorted((c for c in self._open.values() if c.waiting_since is not None),
                         key=lambda c: c.waiting_since)[:count]
        if waiting:
            self._limit_log.warning("connection limit %d reached: closing connections that waited "
                                    "longest for a request (idle or slow clients)", self.max_connections)
        for conn in waiting:
            del self._open[conn.stream]
            conn.cancel_deadline()
            conn.stream.close()
        return len(waiting)

    def start_request(self, server_conn, request_conn):
        delegate = super().start_request(server_conn, request_conn)
        conn = self._open.get(server_conn.stream)
        if conn is None:
            return delegate
        if conn.heads:   # a kept-alive connection now waits for its next request
            conn.waiting_since = IOLoop.current().time()
        return _Watched(delegate, conn)

    def on_close(self, server_conn):
        conn = self._open.pop(server_conn.stream, None)
        if conn is not None:
            conn.cancel_deadline()
        super().on_close(server_conn)


class _Connection:
    __slots__ = ("stream", "waiting_since", "heads", "deadline")

    def __init__(self, stream, now):
        self.stream = stream
        self.waiting_since = now   # None while a request is being read or answered
        self.heads = 0             # request heads received
        self.deadline = None       # the first request head's timeout

    def cancel_deadline(self):
        if self.deadline is not None:
            IOLoop.current().remove_timeout(self.deadline)
            self.deadline = None


class _Watched(httputil.HTTPMessageDelegate):
    """Passes everything on; notes when a request head has arrived."""

    def __init__(self, delegate, conn):
        self.delegate, self.conn = delegate, conn

    def headers_received(self, start_line, headers):
        self.conn.waiting_since = None
        self.conn.heads += 1
        self.conn.cancel_deadline()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        return self.delegate.finish()

    def on_connection_close(self):
        return self.delegate.on_connection_close()


class _ListeningSocket:
    """The listening socket as Tornado's accept loop sees it: an accept() that fails for want
    of descriptors asks the server to make room and ends this pass, instead of raising
    (which asyncio would log with a traceback on every loop pass while the socket stays
    readable)."""

    def __init__(self, sock, server):
        self._sock, self._server = sock, server

    def accept(self):
        try:
            return self._sock.accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS:
                raise
            self._server.out_of_descriptors(self, exc)
            raise BlockingIOError(errno.EAGAIN, "accept paused") from None

    def __getattr__(self, name):   # fileno, close, getsockname, ...
        return getattr(self._sock, name)


class _ServerStream(tornado.iostream.IOStream):
    """An IOStream that knows when a request head is being read and whether an answer went
    out, so that Tornado's own error answers can be given the API's shape."""

    reading_head = False
    answered = False

    def read_until_regex(self, regex, max_bytes=None):
        # HTTP1Connection reads each request head with this, and nothing else
        self.reading_head, self.answered = True, False
        future = super().read_until_regex(regex, max_bytes)
        future.add_done_callback(self._head_done)
        return future

    def _head_done(self, future):
        self.reading_head = False

    def write(self, data, *args, **kwargs):
        if data == _TORNADO_400:
            if self.answered:
                # the application already answered (e.g. 413 from the Content-Length) and
                # Tornado found the framing bad afterwards: the connection just closes
                done = tornado.concurrent.Future()
                done.set_result(None)
                return done
            data = _JSON_400
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":   # an answer's head, not 100 Continue
            self.answered = True
        return super().write(data, *args, **kwargs)

    def close(self, exc_info=False):
        if self.reading_head and not self.closed() and isinstance(_error(exc_info),
                                                                  tornado.iostream.UnsatisfiableReadError):
            # the head outgrew max_header_size: say so before closing (best effort, non-blocking)
            try:
                self.socket.send(_JSON_431)
            except OSError:
                pass
        super().close(exc_info)


def _error(exc_info):
    if isinstance(exc_info, tuple):
        return exc_info[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    return sys.exc_info()[1] if exc_info else None
