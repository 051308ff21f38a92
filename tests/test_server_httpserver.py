"""server/http/server.py in process: the connection cap, eviction, descriptor exhaustion, rate-limited logs."""
import asyncio
import errno
import logging
import socket

import pytest
import tornado.testing
import tornado.web
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from server.http.server import GuardedHTTPServer, Limits, RateLimitedLog

pytestmark = pytest.mark.gen_test(timeout=20)


class Hold(tornado.web.RequestHandler):
    release = None

    async def get(self):
        if self.get_query_argument("hold", None):
            await Hold.release.wait()
        if self.get_query_argument("big", None):
            self.write(b"x" * (8 << 20))   # more than any socket buffers hold
        self.write("ok")


@pytest.fixture
def guarded(io_loop):
    servers = []

    def start(max_connections, **limits):
        Hold.release = asyncio.Event()
        server = GuardedHTTPServer(tornado.web.Application([(r"/", Hold)]),
                                   limits=Limits(max_connections=max_connections, **limits))
        sock, port = tornado.testing.bind_unused_port()
        server.add_sockets([sock])
        servers.append(server)
        return server, port
    yield start
    for server in servers:
        server.stop()


async def get(port, path=b"/"):
    stream = await TCPClient().connect("127.0.0.1", port)
    await stream.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return stream, await stream.read_until(b"ok")


async def closed_by_server(stream):
    try:
        await asyncio.wait_for(stream.read_bytes(1), 5)
    except StreamClosedError:
        return True
    return False


async def test_at_the_cap_the_longest_waiting_connection_makes_room(guarded):
    server, port = guarded(3)
    idle = [await TCPClient().connect("127.0.0.1", port) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert server.open_connections == 3
    stream, answer = await get(port)           # a fourth: served, the oldest idle one closed
    assert answer.startswith(b"HTTP/1.1 200")
    assert await closed_by_server(idle[0])
    assert server.open_connections == 3
    for s in idle[1:] + [stream]:
        s.close()


async def test_when_every_connection_works_new_ones_wait_in_the_backlog(guarded, caplog):
    server, port = guarded(1)
    busy = await TCPClient().connect("127.0.0.1", port)
    await busy.write(b"GET /?hold=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="server.http"):
        waiting = await TCPClient().connect("127.0.0.1", port)    # the kernel completes the handshake
        await waiting.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = waiting.read_until(b"ok")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(answer), 0.7)   # not accepted while the other works
        assert server.open_connections == 1
        Hold.release.set()
        assert (await busy.read_until(b"ok")).startswith(b"HTTP/1.1 200")   # the working one was never cut
        busy.close()
        assert (await asyncio.wait_for(answer, 5)).startswith(b"HTTP/1.1 200")
    assert sum("wait in the listen backlog" in r.getMessage() for r in caplog.records) == 1
    waiting.close()


async def test_clients_slow_to_send_or_to_read_are_waiting_and_make_room(guarded):
    server, port = guarded(2)
    body = await TCPClient().connect("127.0.0.1", port)     # a body that never completes
    await body.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    await asyncio.sleep(0.1)
    reader = await TCPClient().connect("127.0.0.1", port)   # an answer it never reads
    reader.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await reader.write(b"GET /?big=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.3)
    conns = list(server._open.values())
    assert len(conns) == 2 and all(c.waiting_since() is not None for c in conns)
    stream, answer = await get(port)                         # room is made: the slow body goes first
    assert answer.startswith(b"HTTP/1.1 200")
    assert await closed_by_server(body)
    stream2, answer = await get(port)
    assert answer.startswith(b"HTTP/1.1 200")
    for s in (stream, stream2, reader):
        s.close()


async def test_an_answer_left_unread_is_given_up_after_the_send_timeout(guarded):
    server, port = guarded(10, send_timeout=0.5)
    reader = await TCPClient().connect("127.0.0.1", port)
    reader.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await reader.write(b"GET /?big=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)
    assert server.open_connections == 1
    await asyncio.sleep(1.0)
    assert server.open_connections == 0      # closed by the server, not by us
    reader.close()


async def test_out_of_descriptors_pauses_accept_logs_once_and_recovers(guarded, caplog):
    server, port = guarded(100)
    listening = next(iter(server._sockets.values()))
    real_accept, failures = listening._sock.accept, [0]

    def accept():
        if failures[0] < 3:
            failures[0] += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept()
    listening._sock = _AcceptWith(listening._sock, accept)
    with caplog.at_level(logging.WARNING):
        stream, answer = await get(port)     # accepted once the pauses are over
    assert answer.startswith(b"HTTP/1.1 200") and failures[0] == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot accept connections: Too many open files" in m for m in messages) == 1, messages
    assert not any(r.exc_info for r in caplog.records)
    stream.close()


class _AcceptWith:
    def __init__(self, sock, accept):
        self._sock, self.accept = sock, accept

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_rate_limited_log_counts_what_it_held_back(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), every=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        assert limited.warning("full %d", 1)
        for _ in range(100):
            assert not limited.warning("full %d", 1)
        now[0] = 61
        assert limited.warning("full %d", 2)
    assert [r.getMessage() for r in caplog.records] == [
        "full 1", "full 2 (and 100 more times since the last report)"]
