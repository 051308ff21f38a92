"""server/httpserver.py in process: the connection cap, eviction, descriptor exhaustion, rate-limited logs."""
import asyncio
import errno
import logging

import pytest
import tornado.testing
import tornado.web
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from server.httpserver import GuardedHTTPServer, Limits, RateLimitedLog

pytestmark = pytest.mark.gen_test(timeout=20)


class Hold(tornado.web.RequestHandler):
    release = None

    async def get(self):
        if self.get_query_argument("hold", None):
            await Hold.release.wait()
        self.write("ok")


@pytest.fixture
def guarded(io_loop):
    servers = []

    def start(max_connections):
        Hold.release = asyncio.Event()
        server = GuardedHTTPServer(tornado.web.Application([(r"/", Hold)]),
                                   limits=Limits(max_connections=max_connections))
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


async def test_when_every_connection_is_busy_new_ones_are_refused_and_logged_once(guarded, caplog):
    server, port = guarded(1)
    busy = await TCPClient().connect("127.0.0.1", port)
    await busy.write(b"GET /?hold=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="server.http"):
        for _ in range(5):
            refused = await TCPClient().connect("127.0.0.1", port)
            assert await closed_by_server(refused)
    assert sum("every connection is busy" in r.getMessage() for r in caplog.records) == 1
    Hold.release.set()
    assert (await busy.read_until(b"ok")).startswith(b"HTTP/1.1 200")   # the busy one was never cut
    busy.close()


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
