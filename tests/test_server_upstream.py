"""The upstream pool: connections kept and reused, framing, stale connections, timeouts."""
import asyncio

import pytest
import tornado.web

from server.wechat import upstream

pytestmark = pytest.mark.gen_test(timeout=20)


class Echo(tornado.web.RequestHandler):
    def post(self):
        self.write(b"echo:" + self.request.body)


class Chunked(tornado.web.RequestHandler):
    async def get(self):
        for part in (b"<xml>", b"<a>1</a>", b"</xml>"):
            self.write(part)
            await self.flush()


class Slow(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(2)
        self.write("late")


@pytest.fixture
def app():
    return tornado.web.Application([(r"/echo", Echo), (r"/chunked", Chunked), (r"/slow", Slow)])


async def raw_server(answer):
    """A TCP server that answers every request with the given bytes, then closes."""
    async def handle(reader, writer):
        await reader.read(65536)
        writer.write(answer)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, "http://127.0.0.1:%d/" % server.sockets[0].getsockname()[1]


async def test_connections_are_kept_and_reused(http_server, base_url):
    pool = upstream.Pool(connect_timeout=2)
    for i in range(50):
        status, body = await pool.fetch("POST", base_url + "/echo", b"x%d" % i, {}, 5)
        assert (status, body) == (200, b"echo:x%d" % i)
    assert pool.connections_opened == 1
    results = await asyncio.gather(*[pool.fetch("POST", base_url + "/echo", b"c", {}, 5) for _ in range(20)])
    assert all(r == (200, b"echo:c") for r in results)
    assert pool.connections_opened <= 20
    pool.close()


async def test_chunked_answer(http_server, base_url):
    pool = upstream.Pool(connect_timeout=2)
    assert await pool.fetch("GET", base_url + "/chunked", b"", {}, 5) == (200, b"<xml><a>1</a></xml>")
    pool.close()


async def test_deadline_covers_the_whole_request(http_server, base_url):
    pool = upstream.Pool(connect_timeout=2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.TimeoutError):
        await pool.fetch("GET", base_url + "/slow", b"", {}, 0.3)
    assert asyncio.get_running_loop().time() - started < 1.0
    pool.close()


async def test_stale_idle_connection_is_replaced(base_url, http_server):
    pool = upstream.Pool(connect_timeout=2)
    await pool.fetch("POST", base_url + "/echo", b"1", {}, 5)
    await http_server.close_all_connections()  # the peer closes the idle keep-alive connection
    assert await pool.fetch("POST", base_url + "/echo", b"2", {}, 5) == (200, b"echo:2")
    assert pool.connections_opened == 2
    pool.close()


async def test_answer_without_length_reads_to_close_and_is_not_pooled():
    server, url = await raw_server(b"HTTP/1.1 200 OK\r\n\r\nto-the-end")
    pool = upstream.Pool(connect_timeout=2)
    assert await pool.fetch("GET", url, b"", {}, 5) == (200, b"to-the-end")
    assert not any(pool._idle.values())
    pool.close()
    server.close()


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % (b"9" * 5001)])
async def test_unreadable_answers(answer):
    server, url = await raw_server(answer)
    pool = upstream.Pool(connect_timeout=2)
    with pytest.raises(upstream.BadResponse):
        await pool.fetch("GET", url, b"", {}, 5)
    pool.close()
    server.close()


async def test_refused_connection_is_an_oserror():
    server, url = await raw_server(b"")
    server.close()
    await server.wait_closed()
    pool = upstream.Pool(connect_timeout=2)
    with pytest.raises(OSError):
        await pool.fetch("GET", url, b"", {}, 5)
    pool.close()


async def test_a_dropped_request_is_replayed_at_most_once():
    """A peer that reads the request and hangs up: one replay on a new connection, no more."""
    mode = {"drop": False, "seen": 0}

    async def handle(reader, writer):
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            length = int(request.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if mode["drop"]:
                mode["seen"] += 1
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = "http://127.0.0.1:%d/secapi/pay/refund" % server.sockets[0].getsockname()[1]
    pool = upstream.Pool(connect_timeout=2)
    await asyncio.gather(*[pool.fetch("POST", url, b"x", {}, 5) for _ in range(10)])
    assert sum(len(v) for v in pool._idle.values()) == pool.connections_opened >= 2
    mode["drop"] = True
    with pytest.raises(OSError):
        await pool.fetch("POST", url, b"refund", {}, 5)
    assert mode["seen"] == 2
    pool.close()
    server.close()
