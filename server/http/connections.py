"""The connection pieces of server/http/server.py: a connection's phase, the listening socket
that pauses instead of failing, and the stream that gives Tornado's own errors the API's shape."""
import errno
import json
import socket
import sys

import tornado.concurrent
import tornado.iostream
from tornado import httputil
from tornado.ioloop import IOLoop

MAX_HEADER_BYTES = 16 * 1024      # a request line and headers; nginx's default buffers are 4 x 8 KiB
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def json_response(status, reason, code, message):
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s") % (status, reason.encode(), len(body), body)


_TORNADO_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"   # what HTTP1Connection writes on HTTPInputError
_JSON_400 = json_response(400, "Bad Request", "BAD_REQUEST",
                          "malformed HTTP request (request line, headers or body framing)")
_JSON_431 = json_response(431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE",
                          "request line and headers over %d bytes" % MAX_HEADER_BYTES)


HEAD, BODY, WORK = "head", "body", "work"


class Connection:
    __slots__ = ("stream", "phase", "since", "heads", "deadline")

    def __init__(self, stream, now):
        self.stream = stream
        self.phase, self.since = HEAD, now   # what it is doing, since when
        self.heads = 0                        # request heads received
        self.deadline = None                  # the first request head's timeout

    def waiting_since(self):
        """When it began to wait on its client (head, body, or an unread answer); None while
        the backend works on its request."""
        if self.phase != WORK:
            return self.since
        return self.stream.blocked_since

    def input_pending(self):
        """Whether the client's next bytes wait in the socket, unread (so it is not stalled on
        them); a connection whose answer the client does not read is stalled whatever it sent."""
        if self.phase == WORK:
            return False
        try:
            return bool(self.stream.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:   # nothing there (EAGAIN), or the connection is gone
            return False

    def cancel_deadline(self):
        if self.deadline is not None:
            IOLoop.current().remove_timeout(self.deadline)
            self.deadline = None


class Watched(httputil.HTTPMessageDelegate):
    """Passes everything on; notes when a request head and its body have arrived."""

    def __init__(self, delegate, conn):
        self.delegate, self.conn = delegate, conn

    def headers_received(self, start_line, headers):
        self.conn.phase, self.conn.since = BODY, IOLoop.current().time()
        self.conn.heads += 1
        self.conn.cancel_deadline()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        self.conn.phase = WORK
        return self.delegate.finish()

    def on_connection_close(self):
        return self.delegate.on_connection_close()


class ListeningSocket:
    """The listening socket as Tornado's accept loop sees it: an accept() that fails for want
    of descriptors asks the server to make room and ends this pass, instead of raising
    (which asyncio would log with a traceback on every loop pass while the socket stays
    readable)."""

    def __init__(self, sock, server):
        self._sock, self._server = sock, server

    def accept(self):
        if not self._server.may_accept(self):
            raise BlockingIOError(errno.EAGAIN, "at the connection limit")
        try:
            accepted = self._sock.accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS:
                raise
            self._server.out_of_descriptors(self, exc)
            raise BlockingIOError(errno.EAGAIN, "accept paused") from None
        self._server.accepted()
        return accepted

    def __getattr__(self, name):   # fileno, close, getsockname, ...
        return getattr(self._sock, name)


class ServerStream(tornado.iostream.IOStream):
    """An IOStream that knows when a request head is being read and whether an answer went
    out, so that Tornado's own error answers can be given the API's shape; and that closes
    when the client leaves an answer unread for `send_timeout`."""

    reading_head = False
    answered = False
    send_timeout = None
    blocked_since = None   # when output began to wait for the client to read it
    _last_write = None

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
        future = self._last_write = super().write(data, *args, **kwargs)
        if not future.done() and self.blocked_since is None and not self.closed():
            # the socket buffer is full: the client is not reading (fast enough)
            self.blocked_since = IOLoop.current().time()
            future.add_done_callback(self._flushed)
            if self.send_timeout:
                IOLoop.current().call_later(self.send_timeout, self._send_due)
        return future

    def _flushed(self, future):
        last = self._last_write
        if last is not None and not last.done() and not self.closed():
            last.add_done_callback(self._flushed)   # more is waiting: still blocked
        else:
            self.blocked_since = None

    def _send_due(self):
        """The client has left output unread for send_timeout: give up on it."""
        if self.blocked_since is None or self.closed():
            return
        left = self.blocked_since + self.send_timeout - IOLoop.current().time()
        if left > 0:   # it unblocked and blocked again meanwhile
            IOLoop.current().call_later(left, self._send_due)
        else:
            self.close()

    def close(self, exc_info=False):
        if not self.closed() and isinstance(_error(exc_info), tornado.iostream.UnsatisfiableReadError):
            # a head over max_header_size (431), or a chunk-size line Tornado will not read
            # (400): say so before closing (best effort, non-blocking)
            answer = _JSON_431 if self.reading_head else None if self.answered else _JSON_400
            try:
                if answer:
                    self.socket.send(answer)
            except OSError:
                pass
        super().close(exc_info)


def _error(exc_info):
    if isinstance(exc_info, tuple):
        return exc_info[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    return sys.exc_info()[1] if exc_info else None
