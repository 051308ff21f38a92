"""A lean keep-alive HTTP/1.1 client for WeChat's hosts, on Tornado's IOStream.

Why not a library client: Tornado's simple client opens a new connection (and TLS
handshake) per request, and its curl client spent ~300 us of Python per call in our
profile (bench/) while still dropping pooled connections. WeChat's APIs need one thing:
small requests to a few hosts over connections that stay open. This does that, with an
explicit connect timeout, a deadline for the whole request, and a bounded idle pool.

Raises asyncio.TimeoutError when the deadline passes, OSError (including
StreamClosedError, ssl.SSLError, ConnectionRefusedError) when the connection fails, and
BadResponse when the answer is not HTTP/1.x we can read.
"""
import asyncio
import collections
import ssl
from urllib.parse import urlsplit

from tornado import httputil
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024


class BadResponse(ValueError):
    """The peer answered something that is not a readable HTTP/1.x response."""


class _Stale(Exception):
    """A pooled connection the peer had closed before we sent anything on it."""


class Pool:
    def __init__(self, connect_timeout, max_idle_per_host=256):
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle = collections.defaultdict(list)
        self._tcp = TCPClient()
        self.connections_opened = 0

    def close(self):
        for streams in self._idle.values():
            for stream in streams:
                stream.close()
        self._idle.clear()
        self._tcp.close()

    async def fetch(self, method, url, body, headers, timeout, ssl_context=None):
        """(status, body bytes) of one request, all of it within `timeout` seconds."""
        return await asyncio.wait_for(self._fetch(method, url, body, headers, ssl_context), timeout)

    async def _fetch(self, method, url, body, headers, ssl_context):
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        key = (parts.hostname, port, ssl_context if secure else None)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        request = _request_bytes(method, target, parts.netloc, body, headers)
        while True:
            idle = self._idle[key]
            if idle:
                stream, reused = idle.pop(), True
            else:
                stream, reused = await self._connect(parts.hostname, port, key[2]), False
            try:
                status, keep_alive, answer = await _exchange(stream, request, reused)
            except _Stale:
                stream.close()
                continue  # the peer had closed this idle connection: take another one
            except BaseException:
                stream.close()
                raise
            self._release(key, stream, keep_alive)
            return status, answer

    async def _connect(self, host, port, ssl_context):
        stream = await self._tcp.connect(host, port, ssl_options=ssl_context, timeout=self.connect_timeout)
        stream.set_nodelay(True)
        self.connections_opened += 1
        return stream

    def _release(self, key, stream, keep_alive):
        if keep_alive and not stream.closed() and len(self._idle[key]) < self.max_idle_per_host:
            self._idle[key].append(stream)
        else:
            stream.close()


def client_ssl_context(ca_file=None, cert_file=None, key_file=None):
    """Verifying TLS context: the system's CAs (or ca_file), and a client certificate if given."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _request_bytes(method, target, host, body, headers):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: " + host, "Connection: keep-alive",
             "Content-Length: %d" % len(body or b"")]
    lines += ["%s: %s" % item for item in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _exchange(stream, request, reused):
    """Send request, read the response. Returns (status, keep_alive, body)."""
    try:
        await stream.write(request)
        head = await stream.read_until_regex(b"\r?\n\r?\n", max_bytes=MAX_HEADER_BYTES)
    except StreamClosedError:
        if reused:
            raise _Stale() from None
        raise
    try:
        first, _, rest = head.decode("latin-1").partition("\n")
        start = httputil.parse_response_start_line(first.strip())
        headers = httputil.HTTPHeaders.parse(rest)
    except httputil.HTTPInputError as exc:
        raise BadResponse(str(exc)) from None
    body = await _read_body(stream, headers)
    framed = _chunked(headers) or "Content-Length" in headers  # else the body ran to the close
    keep_alive = framed and start.version == "HTTP/1.1" and headers.get("Connection", "").lower() != "close"
    return start.code, keep_alive, body


async def _read_body(stream, headers):
    if _chunked(headers):
        return await _read_chunked(stream)
    if "Content-Length" in headers:
        length = headers["Content-Length"]
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise BadResponse("bad Content-Length %r" % length[:20])
        return await stream.read_bytes(int(length)) if int(length) else b""
    return await stream.read_until_close()


async def _read_chunked(stream):
    parts, total = [], 0
    while True:
        line = await stream.read_until(b"\r\n", max_bytes=64)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadResponse("bad chunk size") from None
        total += size
        if total > MAX_BODY_BYTES:
            raise BadResponse("body too large")
        if size == 0:
            await stream.read_until(b"\r\n", max_bytes=MAX_HEADER_BYTES)  # no trailers expected
            return b"".join(parts)
        parts.append((await stream.read_bytes(size + 2))[:-2])


def _chunked(headers):
    return headers.get("Transfer-Encoding", "").lower() == "chunked"
