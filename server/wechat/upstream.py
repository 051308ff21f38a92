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
import base64
import collections
import ssl
import time
import urllib.request
from urllib.parse import unquote, urlsplit

from server import numbers

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_INTERIM = 10            # 1xx answers skipped before the final one
MAX_TRAILER_BYTES = 16 * 1024


class BadResponse(ValueError):
    """The peer answered something that is not a readable HTTP/1.x response."""


class TooLarge(BadResponse):
    """An answer whose body is over the caller's bound (max_body)."""


class ProxyError(OSError):
    """The proxy refused or failed the tunnel (its status, never its credentials)."""


class _Stale(Exception):
    """A pooled connection the peer had closed before answering anything on it."""


class Proxy:
    """Where WeChat calls go through: an explicit proxy URL (http://[user:pass@]host:port), or
    the environment's HTTPS_PROXY / HTTP_PROXY, minus the hosts NO_PROXY names."""

    def __init__(self, url=None, environ=None):
        self.explicit = _proxy_address(url) if url else None
        env = urllib.request.getproxies_environment() if environ is None else _env_proxies(environ)
        self._no_proxy = env.get("no", "")
        # parsed once, here: a malformed HTTPS_PROXY stops start-up instead of failing each call
        self._by_scheme = {scheme: _proxy_address(env[scheme]) for scheme in ("http", "https") if env.get(scheme)}

    def for_target(self, scheme, host, port=None):
        """(host, port, Proxy-Authorization value or None) of the proxy for a target, or None."""
        target = "%s:%d" % (host, port) if port else host   # NO_PROXY may name host or host:port
        if self._no_proxy and urllib.request.proxy_bypass_environment(target, {"no": self._no_proxy}):
            return None
        return self.explicit or self._by_scheme.get(scheme)


def _env_proxies(environ):
    """As urllib.request.getproxies_environment: lowercase names win, an empty one unsets."""
    found = {}
    for name, value in environ.items():
        if name.lower().endswith("_proxy") and value and name != name.lower():
            found[name.lower()[:-6]] = value
    for name, value in environ.items():
        if name.endswith("_proxy") and name == name.lower():
            if value:
                found[name[:-6]] = value
            else:
                found.pop(name[:-6], None)
    return found


def _proxy_address(url):
    """(host, port, Basic credentials or None); ValueError that never repeats the URL (it may
    hold a password)."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise ValueError("a proxy URL is http://[user:password@]host:port")
    auth = None
    if parts.username is not None:
        credentials = "%s:%s" % (unquote(parts.username), unquote(parts.password or ""))
        auth = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return parts.hostname, port or 80, auth


class Pool:
    """Keep-alive connections per (host, port, TLS context, proxy): at most `max_per_host`
    open at once (callers wait their turn within their deadline), idle ones dropped after
    `idle_timeout` seconds. `open` and `idle` count its connections (an idle one is also
    open); `watch(opened, idle)`, if given, is told each change of them."""

    def __init__(self, connect_timeout, max_per_host=64, idle_timeout=30.0, proxy=None, clock=time.monotonic,
                 watch=None):
        self.connect_timeout = connect_timeout
        self.max_per_host = max_per_host
        self.idle_timeout = idle_timeout
        self.proxy = proxy or Proxy()
        self.clock = clock
        self._idle = collections.defaultdict(list)    # key -> [(reader, writer, idle since)]
        self._slots = {}                               # key -> Semaphore(max_per_host)
        self.connections_opened = 0
        self.open = self.idle = 0
        self.watch = watch

    def _count(self, opened=0, idle=0):
        self.open += opened
        self.idle += idle
        if self.watch is not None:
            self.watch(opened, idle)

    def _close(self, writer, was_idle=False):
        writer.close()
        self._count(-1, -1 if was_idle else 0)

    def close(self):
        for connections in self._idle.values():
            for _, writer, _ in connections:
                self._close(writer, was_idle=True)
        self._idle.clear()

    async def fetch(self, method, url, body, headers, timeout, ssl_context=None, max_body=MAX_BODY_BYTES):
        """(status, body bytes) of one request, all of it (waiting for a free connection
        included) within `timeout` seconds; a body over `max_body` bytes is a BadResponse."""
        status, _, answer = await self.fetch_response(method, url, body, headers, timeout, ssl_context, max_body)
        return status, answer

    async def fetch_response(self, method, url, body, headers, timeout, ssl_context=None, max_body=MAX_BODY_BYTES):
        """As fetch(), with the answer's header fields: (status, [(name, value)], body)."""
        # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that arrives
        # just as the inner step (a connect) completes, and the request then has no deadline
        async with asyncio.timeout(timeout):
            return await self._fetch(method, url, body, headers, ssl_context, max_body)

    async def _fetch(self, method, url, body, headers, ssl_context, max_body):
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        via = self.proxy.for_target(parts.scheme, parts.hostname, port)
        key = (parts.hostname, port, ssl_context if secure else None, via)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        extra = dict(headers or {})
        if via and not secure:   # a plain-HTTP proxy gets the absolute URL and our credentials
            target = "http://%s%s" % (parts.netloc, target)
            if via[2]:
                extra["Proxy-Authorization"] = via[2]
        request = _request_bytes(method, target, parts.netloc, body, extra)
        host_key = (parts.hostname, port, via)   # one cap per host, whatever the TLS context
        slots = self._slots.get(host_key)
        if slots is None:
            slots = self._slots[host_key] = asyncio.Semaphore(self.max_per_host)
        async with slots:
            connection = self._take(key)
            try:
                return await self._send(key, connection, request, method, connection is not None, max_body)
            except _Stale:
                # the peer closed this idle connection, so it has likely closed its siblings too:
                # drop them all and send once more, on a new connection (never more than once)
                self._drop_idle(key)
                return await self._send(key, None, request, method, False, max_body)

    async def _send(self, key, connection, request, method, reused, max_body):
        if connection is None:
            connection = await self._connect(*key)
        try:
            fields = []
            status, keep_alive, answer = await _exchange(*connection, request, method, reused, fields, max_body)
        except BaseException:
            self._close(connection[1])
            raise
        self._release(key, connection, keep_alive)
        return status, fields, answer

    def _drop_idle(self, key):
        for _, writer, _ in self._idle.pop(key, []):
            self._close(writer, was_idle=True)

    def _take(self, key):
        idle, now = self._idle[key], self.clock()
        while idle and now - idle[0][2] > self.idle_timeout:   # oldest first: retire the expired
            self._close(idle.pop(0)[1], was_idle=True)
        while idle:
            reader, writer, since = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                self._count(idle=-1)
                return reader, writer
            self._close(writer, was_idle=True)
        return None

    async def _connect(self, host, port, ssl_context, via):
        async with asyncio.timeout(self.connect_timeout):
            connection = await self._open(host, port, ssl_context, via)
        self.connections_opened += 1
        self._count(opened=1)
        return connection

    async def _open(self, host, port, ssl_context, via):
        if via is None:
            return await asyncio.open_connection(host, port, ssl=ssl_context, limit=MAX_HEADER_BYTES)
        reader, writer = await asyncio.open_connection(via[0], via[1], limit=MAX_HEADER_BYTES)
        if ssl_context is None:
            return reader, writer
        try:
            await _tunnel(reader, writer, host, port, via[2])
            await writer.start_tls(ssl_context, server_hostname=host)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def _release(self, key, connection, keep_alive):
        if keep_alive and len(self._idle[key]) < self.max_per_host:
            self._idle[key].append((connection[0], connection[1], self.clock()))
            self._count(idle=1)
        else:
            self._close(connection[1])


async def _tunnel(reader, writer, host, port, auth):
    """HTTP CONNECT host:port through the proxy on (reader, writer)."""
    lines = ["CONNECT %s:%d HTTP/1.1" % (host, port), "Host: %s:%d" % (host, port)]
    if auth:
        lines.append("Proxy-Authorization: " + auth)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise ProxyError("the proxy closed the connection instead of a tunnel") from None
    except asyncio.LimitOverrunError:
        raise BadResponse("proxy answer head too large") from None
    _, status, _, _ = _parse_head(head)
    if status != 200:
        raise ProxyError("the proxy answered %d to CONNECT" % status)


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


async def _exchange(reader, writer, request, method, reused, fields=None, max_body=MAX_BODY_BYTES):
    """Send request, read the response. Returns (status, keep_alive, body); the final
    answer's header fields, (name, value) as sent, are appended to `fields` if given."""
    writer.write(request)
    for interim in range(MAX_INTERIM + 1):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial and interim == 0:
                raise _Stale() from None
            raise ConnectionResetError("connection closed before the answer") from None
        except asyncio.LimitOverrunError:
            raise BadResponse("response head too large") from None
        version, status, headers, received = _parse_head(head)
        if not 100 <= status < 200:
            break
        if status == 101:
            raise BadResponse("101 Switching Protocols to a plain request")
    else:
        raise BadResponse("more than %d interim (1xx) answers" % MAX_INTERIM)
    bodiless = method == "HEAD" or status in (204, 304)
    body = b"" if bodiless else await _read_body(reader, headers, max_body)
    framed = bodiless or "transfer-encoding" in headers or "content-length" in headers  # else: to the close
    keep_alive = framed and version == "HTTP/1.1" and "close" not in headers.get("connection", ())
    if status in (204, 304) and (headers.get("transfer-encoding") or headers.get("content-length", "0") != "0"):
        keep_alive = False   # a body where none may be: what follows on this connection is unknown
    if fields is not None:
        fields.extend(received)
    return status, keep_alive, body


def _parse_head(head):
    """(version, status, headers, fields) with the framing headers checked: Content-Length
    (one value, however often repeated), Transfer-Encoding (chunked, and never beside a
    Content-Length) and the Connection tokens (a set); fields: every (name, value) as sent."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()) or rest[3:4] not in ("", " "):
        raise BadResponse("not an HTTP/1.x status line")
    lengths, codings, tokens, fields = set(), [], set(), []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        fields.append((name.strip(), value.strip()))
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            lengths.update(v.strip() for v in value.split(","))
        elif name == "transfer-encoding":
            codings += [v.strip() for v in value.split(",") if v.strip()]
        elif name == "connection":
            tokens.update(v.strip() for v in value.split(",") if v.strip())
    headers = {"connection": tokens}
    if len(lengths) > 1:
        raise BadResponse("conflicting Content-Length values")
    if codings and lengths:
        raise BadResponse("both Transfer-Encoding and Content-Length")
    if codings:
        if codings != ["chunked"]:
            raise BadResponse("unsupported Transfer-Encoding %r" % ",".join(codings)[:40])
        headers["transfer-encoding"] = "chunked"
    if lengths:
        headers["content-length"] = lengths.pop()
    return version, int(code), headers, fields


async def _read_body(reader, headers, max_body=MAX_BODY_BYTES):
    try:
        if headers.get("transfer-encoding") == "chunked":
            return await _read_chunked(reader, max_body)
        if "content-length" in headers:
            return await reader.readexactly(_content_length(headers["content-length"], max_body))
        body = await reader.read(max_body + 1)
        while len(body) <= max_body and not reader.at_eof():
            body += await reader.read(max_body + 1 - len(body))
        if len(body) > max_body:
            raise TooLarge("body too large")
        return body
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("connection closed mid-answer") from None
    except asyncio.LimitOverrunError:
        raise BadResponse("chunk header too large") from None


def _content_length(text, max_body=MAX_BODY_BYTES):
    try:
        return numbers.parse_whole(text, 0, max_body)
    except numbers.NumberRefused as exc:
        if exc.too_large:
            raise TooLarge("body too large") from None
        raise BadResponse("bad Content-Length %r" % text[:20]) from None


async def _read_chunked(reader, max_body=MAX_BODY_BYTES):
    parts, total = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise BadResponse("bad chunk size")
        size = int(size_text, 16)
        total += size
        if total > max_body:
            raise TooLarge("body too large")
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise BadResponse("chunk not followed by CRLF")
        parts.append(chunk[:-2])


async def _skip_trailers(reader):
    """The trailer fields after the last chunk, up to the empty line that ends the answer."""
    seen = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return
        seen += len(line)
        if seen > MAX_TRAILER_BYTES:
            raise BadResponse("trailers too large")
