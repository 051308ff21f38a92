"""The backend's HTTP server: Tornado's HTTPServer with the limits an exposed payment API needs.

What it adds to Tornado's server (whose defaults let a connection idle or trickle its
headers for an hour, and never give up on a client that does not read its answer):

- timeouts: a new connection must complete its first request head within
  `header_timeout`; a kept-alive connection must complete its next request head within
  `idle_timeout` (Tornado's header timeout); a body must arrive within `body_timeout`; an
  answer must be taken by the client within `send_timeout`;
- a cap on open connections (`max_connections`; by default half of the descriptors left
  after a reserve, since every request may hold a connection to WeChat too). A connection
  is *waiting* while it waits for a request head, sends a body, or leaves its answer
  unread, and *working* while the backend handles a complete request. At the cap the
  connection that has been waiting longest is closed to make room (as nginx reuses its
  idle connections); when every connection is working, accepting stops until one ends, so
  new clients wait in the listen backlog instead of being turned away;
- descriptor exhaustion at accept() (EMFILE and kin) closes waiting connections and pauses
  accepting briefly, logged at most once a minute, instead of a traceback on every loop pass;
- Tornado's own error answers in the API's JSON shape: its bare "400 Bad Request"
  (malformed request line, headers or body framing) becomes a JSON 400, and a request
  head over `MAX_HEADER_BYTES` gets a JSON 431 instead of a silent close. Both say
  `Connection: close`.

Everything is per process; nothing here blocks the IOLoop.
"""
import heapq
import logging
import time
from dataclasses import dataclass

import tornado.httpserver
from tornado.ioloop import IOLoop
from tornado.log import app_log

from server.descriptors import default_max_connections, descriptor_limit
from server.http.connections import HEAD, MAX_HEADER_BYTES, Connection, ListeningSocket, ServerStream, Watched

log = logging.getLogger("server.http")

MAX_BODY_BYTES = 1024 * 1024      # hard cap; every handler enforces its own, smaller one
ACCEPT_PAUSE = 0.1                # seconds without accept() after descriptors ran out
RECHECK_PAUSED = 0.5              # seconds: a paused accept looks again even if no connection ended
EVICT_GRACE = 0.1                 # seconds a connection waits before it may be closed to make room
REPORT_EVERY = 60.0               # seconds between two log lines about the same limit


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0   # accept -> first request head complete
    idle_timeout: float = 75.0     # keep-alive: end of an answer -> next request head complete
    body_timeout: float = 30.0     # request head -> body complete
    max_connections: int = 0       # 0: default_max_connections()
    send_timeout: float = 30.0     # an answer written -> taken by the client


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
        self._open = {}      # IOStream -> Connection, every connection this server holds
        self._paused = []    # listening sockets not accepted from while every connection works
        self._evict_log = RateLimitedLog(log)
        self._full_log = RateLimitedLog(log)
        self._descriptor_log = RateLimitedLog(log)

    @property
    def open_connections(self):
        return len(self._open)

    # -- accepting ---------------------------------------------------------------
    def add_sockets(self, sockets):
        super().add_sockets([ListeningSocket(sock, self) for sock in sockets])

    def _handle_connection(self, connection, address):
        # TCPServer's, with our stream class (plain TCP only: the backend does not do TLS)
        if self.ssl_options is not None:
            return super()._handle_connection(connection, address)
        try:
            stream = ServerStream(connection, max_buffer_size=self.max_buffer_size,
                                   read_chunk_size=self.read_chunk_size)
            stream.send_timeout = self.limits.send_timeout
            self.handle_stream(stream, address)
        except Exception:
            app_log.error("Error in connection callback", exc_info=True)

    def may_accept(self, sock):
        """Before accept(): whether a new connection may come in (below the cap, or a waiting
        connection can make room). If every connection is working, `sock` is paused (the
        client waits in the listen backlog) until a connection ends."""
        if len(self._open) < self.max_connections or self._longest_waiting(1):
            return True
        self._full_log.warning("connection limit %d reached and every connection is handling a "
                               "request: new connections wait in the listen backlog", self.max_connections)
        self._pause(sock, RECHECK_PAUSED)
        return False

    def accepted(self):
        """After accept(): make room for the new connection if the cap is reached."""
        if len(self._open) >= self.max_connections:
            self._evict(1)

    def out_of_descriptors(self, sock, exc):
        """accept() failed for want of descriptors: make room, stop accepting for a moment."""
        self._descriptor_log.warning("cannot accept connections: %s (%d open, descriptor limit %s); "
                                     "closing waiting ones and pausing accept for %.1fs",
                                     exc.strerror or exc, len(self._open), descriptor_limit(), ACCEPT_PAUSE)
        self._evict(max(1, len(self._open) // 16), report=False)
        self._pause(sock, ACCEPT_PAUSE)

    def _pause(self, sock, seconds):
        if sock in self._paused:
            return
        self._paused.append(sock)
        loop = IOLoop.current()
        loop.update_handler(sock.fileno(), 0)
        loop.call_later(seconds, self._resume)

    def _resume(self):
        paused, self._paused = self._paused, []
        for sock in paused:
            if sock.fileno() != -1:   # not closed by stop() meanwhile
                IOLoop.current().update_handler(sock.fileno(), IOLoop.READ)

    # -- connections ---------------------------------------------------------------
    def handle_stream(self, stream, address):
        loop = IOLoop.current()
        conn = self._open[stream] = Connection(stream, loop.time())
        conn.deadline = loop.call_later(self.limits.header_timeout, self._first_head_due, stream)
        super().handle_stream(stream, address)

    def _first_head_due(self, stream):
        conn = self._open.get(stream)
        if conn is not None and conn.heads == 0:
            stream.close()

    def _longest_waiting(self, count):
        """The `count` connections that have waited longest on their clients, as (since, n, conn).
        Not one that began to wait less than EVICT_GRACE ago, nor one whose next bytes have
        arrived and are about to be read (a burst of new connections is served, not culled)."""
        latest = IOLoop.current().time() - EVICT_GRACE
        heap = [(t, i, c) for t, i, c in ((c.waiting_since(), i, c) for i, c in enumerate(self._open.values()))
                if t is not None and t <= latest]
        heapq.heapify(heap)
        chosen = []
        while heap and len(chosen) < count:
            candidate = heapq.heappop(heap)
            if not candidate[2].input_pending():
                chosen.append(candidate)
        return chosen

    def _evict(self, count, report=True):
        """Close up to `count` waiting connections, those waiting longest first. Returns how
        many were closed."""
        chosen = self._longest_waiting(count)
        if chosen and report:
            self._evict_log.warning("connection limit %d reached: closing the connections that waited "
                                    "longest (idle, slow to send, or not reading)", self.max_connections)
        for _, _, conn in chosen:
            del self._open[conn.stream]
            conn.cancel_deadline()
            conn.stream.close()
        return len(chosen)

    def start_request(self, server_conn, request_conn):
        delegate = super().start_request(server_conn, request_conn)
        conn = self._open.get(server_conn.stream)
        if conn is None:
            return delegate
        if conn.heads:   # a kept-alive connection now waits for its next request
            conn.since, conn.phase = IOLoop.current().time(), HEAD
        return Watched(delegate, conn)

    def on_close(self, server_conn):
        conn = self._open.pop(server_conn.stream, None)
        if conn is not None:
            conn.cancel_deadline()
        super().on_close(server_conn)
        if self._paused and len(self._open) < self.max_connections:
            self._resume()
