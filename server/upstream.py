"""A lean keep-alive HTTP/1.1 client for WeChat's hosts, on asyncio streams.

Why not a library client: Tornado's simple client opens a new connection (and TLS
handshake) per request, and its curl client spent ~300 us of Python per call in our
profile (bench/) while still dropping pooled connections. WeChat's APIs need one thing:
small requests to a few hosts over connections that stay open. This does that, with an
explicit connect timeout, a deadline for the whole request, and a bounded idle pool.

Raises asyncio.TimeoutError when the deadline passes, OSError (including ssl.SSLError,
ConnectionRefusedError, ConnectionResetError) when the connection fails, and BadResponse
when the answer is not HTTP/1.x we can read.
"""
import asyncio
import collections
import ssl
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024


class BadResponse(ValueError):
    """The peer answered something that is not a readable HTTP/1.x response."""


class _Stale(Exception):
    """A pooled connection the peer had closed before answering anything on it."""


class Pool:
    def __init__(self, connect_timeout, max_idle_per_host=1024):
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle = collections.defaultdict(list)
        self.connections_opened = 0

    def close(self):
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()

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
        connection = self._take(key)
        try:
            return await self._send(key, connection, request, reused=connection is not None)
        except _Stale:
            # the peer closed this idle connection, so it has likely closed its siblings too:
            # drop them all and send once more, on a new connection (never more than once)
            self._drop_idle(key)
            return await self._send(key, None, request, reused=False)

    async def _send(self, key, connection, request, reused):
        if connection is None:
            connection = await self._connect(key[0], key[1], key[2])
        try:
            status, keep_alive, answer = await _exchange(*connection, request, reused)
        except BaseException:
            connection[1].close()
            raise
        self._release(key, connection, keep_alive)
        return status, answer

    def _drop_idle(self, key):
        for _, writer in self._idle.pop(key, []):
            writer.close()

    def _take(self, key):
        idle = self._idle[key]
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _connect(self, host, port, ssl_context):
        connection = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, limit=MAX_HEADER_BYTES), self.connect_timeout)
        self.connections_opened += 1
        return connection

    def _release(self, key, connection, keep_alive):
        if keep_alive and len(self._idle[key]) < self.max_idle_per_host:
            self._idle[key].append(connection)
        else:
            connection[1].close()


def client_ssl_context(ca_file=None, cert_file=None, key_file=None):
    """Verifying TLS context: the system's CAs plus ca_file, and a client certificate if given."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _request_bytes(method, target, host, body, headers):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: " + host, "Connection: keep-alive",
             "Content-Length: %d" % len(body or b"")]
    lines += ["%s: %s" % item for item in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _exchange(reader, writer, request, reused):
    """Send request, read the response. Returns (status, keep_alive, body)."""
    writer.write(request)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if reused and not exc.partial:
            raise _Stale() from None
        raise ConnectionResetError("connection closed before the answer") from None
    except asyncio.LimitOverrunError:
        raise BadResponse("response head too large") from None
    version, status, headers = _parse_head(head)
    body = await _read_body(reader, headers)
    framed = "transfer-encoding" in headers or "content-length" in headers  # else it ran to the close
    keep_alive = framed and version == "HTTP/1.1" and headers.get("connection", "") != "close"
    return status, keep_alive, body


def _parse_head(head):
    """(version, status, {lowercase name: lowercase value}) for the few headers we use."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise BadResponse("not an HTTP/1.x status line")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if sep and name in ("content-length", "transfer-encoding", "connection"):
            headers[name] = value.strip().lower()
    return version, int(code), headers


async def _read_body(reader, headers):
    try:
        if headers.get("transfer-encoding") == "chunked":
            return await _read_chunked(reader)
        if "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY_BYTES:
                raise BadResponse("bad Content-Length %r" % length[:20])
            return await reader.readexactly(int(length))
        body = await reader.read(MAX_BODY_BYTES + 1)
        while len(body) <= MAX_BODY_BYTES and not reader.at_eof():
            body += await reader.read(MAX_BODY_BYTES + 1 - len(body))
        if len(body) > MAX_BODY_BYTES:
            raise BadResponse("body too large")
        return body
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("connection closed mid-answer") from None
    except asyncio.LimitOverrunError:
        raise BadResponse("chunk header too large") from None


async def _read_chunked(reader):
    parts, total = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadResponse("bad chunk size") from None
        total += size
        if total > MAX_BODY_BYTES:
            raise BadResponse("body too large")
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])
