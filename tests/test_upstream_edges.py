"""server/wechat/upstream.py against raw-socket servers that answer the odd things real servers and
proxies answer: 1xx, bodiless statuses, trailers, connection-token lists, conflicting
framing; the per-host cap and the idle timeout; and a property-based test of the parser."""
import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from server.wechat import upstream

GEN = pytest.mark.gen_test(timeout=20)


class RawServer:
    """Answers each request on a connection with the next canned bytes; counts connections
    and the most open at once."""

    def __init__(self, answers, hold=None):
        self.answers, self.hold = list(answers), hold
        self.connections = self.open = self.most_open = 0
        self.writers = []

    async def start(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d/x" % self.server.sockets[0].getsockname()[1]
        return self

    async def serve(self, reader, writer):
        self.writers.append(writer)
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                await reader.readexactly(length[0] if length else 0)
                if self.hold is not None:
                    await self.hold.wait()
                writer.write(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def close(self):
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)   # let the transports finish closing on this loop


async def done(pool, server):
    pool.close()
    await server.close()


async def fetch(pool, server, method="POST"):
    return await pool.fetch(method, server.url, b"<xml/>", {}, 3)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n",
                                     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"])
@GEN
async def test_interim_answers_are_skipped(interim):
    server = await RawServer([interim + OK]).start()
    pool = upstream.Pool(connect_timeout=2)
    assert await fetch(pool, server) == (200, b"ok")
    assert await fetch(pool, server) == (200, b"ok")
    assert server.connections == 1
    await done(pool, server)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n"])
@GEN
async def test_bodiless_statuses_do_not_wait_for_a_close(answer):
    server = await RawServer([answer]).start()
    pool = upstream.Pool(connect_timeout=2)
    status, body = await fetch(pool, server)
    assert body == b"" and status in (204, 304)
    await fetch(pool, server)
    assert server.connections == 1          # and the connection stays usable
    await done(pool, server)


@GEN
async def test_head_has_no_body():
    server = await RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]).start()
    pool = upstream.Pool(connect_timeout=2)
    assert await fetch(pool, server, "HEAD") == (200, b"")
    await done(pool, server)


@GEN
async def test_chunked_trailers_are_read_and_the_connection_stays_clean():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n")
    server = await RawServer([chunked, OK]).start()
    pool = upstream.Pool(connect_timeout=2)
    assert await fetch(pool, server) == (200, b"abcde")
    assert await fetch(pool, server) == (200, b"ok")    # not poisoned by the trailers
    assert server.connections == 1
    await done(pool, server)


@pytest.mark.parametrize("connection, reused", [(b"keep-alive, close", False), (b"Close", False),
                                                (b"keep-alive, Upgrade", True), (b"keep-alive", True)])
@GEN
async def test_connection_token_lists(connection, reused):
    answer = b"HTTP/1.1 200 OK\r\nConnection: %s\r\nContent-Length: 2\r\n\r\nok" % connection
    server = await RawServer([answer]).start()
    pool = upstream.Pool(connect_timeout=2)
    await fetch(pool, server)
    await fetch(pool, server)
    assert server.connections == (1 if reused else 2)
    await done(pool, server)


@pytest.mark.parametrize("headers", [b"Content-Length: 2\r\nContent-Length: 3",
                                     b"Content-Length: 2, 3",
                                     b"Content-Length: 2\r\nTransfer-Encoding: chunked",
                                     b"Transfer-Encoding: gzip, chunked",
                                     b"Transfer-Encoding: identity"])
@GEN
async def test_conflicting_or_unknown_framing_is_a_bad_response(headers):
    server = await RawServer([b"HTTP/1.1 200 OK\r\n%s\r\n\r\nok" % headers]).start()
    pool = upstream.Pool(connect_timeout=2)
    with pytest.raises(upstream.BadResponse):
        await fetch(pool, server)
    await done(pool, server)


@GEN
async def test_a_repeated_equal_content_length_is_fine():
    server = await RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"]).start()
    pool = upstream.Pool(connect_timeout=2)
    assert await fetch(pool, server) == (200, b"ok")
    await done(pool, server)


@GEN
async def test_at_most_max_per_host_connections_and_the_rest_wait_their_turn():
    hold = asyncio.Event()
    server = await RawServer([OK], hold=hold).start()
    pool = upstream.Pool(connect_timeout=2, max_per_host=3)
    calls = [asyncio.ensure_future(fetch(pool, server)) for _ in range(10)]
    await asyncio.sleep(0.3)
    assert server.open == 3 and not any(c.done() for c in calls)
    hold.set()
    assert [await c for c in calls] == [(200, b"ok")] * 10
    assert server.most_open == 3 and server.connections == 3
    await done(pool, server)


@GEN
async def test_waiting_for_a_connection_counts_against_the_deadline():
    hold = asyncio.Event()
    server = await RawServer([OK], hold=hold).start()
    pool = upstream.Pool(connect_timeout=2, max_per_host=1)
    first = asyncio.ensure_future(fetch(pool, server))
    await asyncio.sleep(0.1)
    with pytest.raises(asyncio.TimeoutError):
        await pool.fetch("POST", server.url, b"", {}, 0.3)   # never got the one connection
    hold.set()
    assert await first == (200, b"ok")
    await done(pool, server)


@GEN
async def test_idle_connections_expire():
    now = [0.0]
    server = await RawServer([OK]).start()
    pool = upstream.Pool(connect_timeout=2, idle_timeout=30, clock=lambda: now[0])
    await fetch(pool, server)
    now[0] = 29
    await fetch(pool, server)
    assert server.connections == 1
    now[0] = 60                                   # idle for 31 s: not used again
    await fetch(pool, server)
    assert server.connections == 2
    await done(pool, server)


def test_proxy_choice_from_the_environment_and_no_proxy():
    env = {"HTTPS_PROXY": "http://user:p%40ss@proxy.local:3128", "http_proxy": "http://plain.local:8080",
           "NO_PROXY": "localhost,.internal.example"}
    proxy = upstream.Proxy(environ=env)
    host, port, auth = proxy.for_target("https", "api.mch.weixin.qq.com")
    assert (host, port) == ("proxy.local", 3128) and auth == "Basic dXNlcjpwQHNz"   # user:p@ss
    assert proxy.for_target("http", "api.weixin.qq.com")[:2] == ("plain.local", 8080)
    assert proxy.for_target("https", "pay.internal.example") is None
    assert proxy.for_target("https", "localhost") is None
    explicit = upstream.Proxy("http://127.0.0.1:8899", environ=env)
    assert explicit.for_target("https", "api.mch.weixin.qq.com") == ("127.0.0.1", 8899, None)
    assert explicit.for_target("https", "localhost") is None          # NO_PROXY still applies
    assert upstream.Proxy(environ={}).for_target("https", "api.mch.weixin.qq.com") is None
    with pytest.raises(ValueError):
        upstream.Proxy("socks5://127.0.0.1:1080")


# -- the parser, property-based: any framing, split anywhere ----------------------------
bodies = st.binary(max_size=300)
framings = st.sampled_from(["length", "chunked", "close"])


def encode(body, framing, chunk_sizes, trailers, interim):
    head = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    if framing == "length":
        return head + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    if framing == "close":
        return head + b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    out, rest = [head + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], body
    sizes = iter(chunk_sizes)
    while rest:
        size = max(1, min(len(rest), next(sizes, len(rest))))
        out.append(b"%x\r\n%s\r\n" % (size, rest[:size]))
        rest = rest[size:]
    out.append(b"0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(trailers)) + b"\r\n")
    return b"".join(out)


@settings(max_examples=300, deadline=None, database=None)
@given(body=bodies, framing=framings, chunk_sizes=st.lists(st.integers(1, 64), max_size=20),
       trailers=st.integers(0, 3), interim=st.booleans(), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_any_framing_split_anywhere_reads_the_same_body(body, framing, chunk_sizes, trailers, interim, cuts):
    wire = encode(body, framing, chunk_sizes, trailers, interim)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in zip(points, points[1:])]

    async def parse():
        reader = asyncio.StreamReader(limit=upstream.MAX_HEADER_BYTES)

        async def feed():
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)
            reader.feed_eof()
        feeding = asyncio.ensure_future(feed())
        result = await upstream._exchange(reader, _NullWriter(), b"", "POST", reused=False)
        await feeding
        return result
    loop = asyncio.new_event_loop()   # its own loop, never made current (pytest-tornado owns that)
    try:
        status, keep_alive, got = loop.run_until_complete(parse())
    finally:
        loop.close()
    assert (status, got) == (200, body)
    assert keep_alive == (framing != "close")


class _NullWriter:
    def write(self, data):
        pass


# -- the WeChat client's check of appid/mch_id in pay answers -----------------------------
def _answer(**drop_or_set):
    from tests.support import DEMO
    fields = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": DEMO["appid"],
              "mch_id": DEMO["mch_id"], "nonce_str": "n", "trade_state": "NOTPAY", "out_trade_no": "T1"}
    for key, value in drop_or_set.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    return fields


@pytest.mark.parametrize("call, fields, ok", [
    ("close_order", _answer(appid=None, mch_id=None), True),       # as a real capture of closeorder
    ("close_order", _answer(appid="wx0000000000000000"), False),   # present: must be ours
    ("order_query", _answer(appid=None), False),                   # orderquery always names both
    ("order_query", _answer(mch_id="99999999"), False),
    ("order_query", _answer(), True),
])
@GEN
async def test_pay_answers_name_our_appid_and_mch_id_when_they_name_any(call, fields, ok):
    from server.wechat.v2 import wire as wxpay
    from server.config import Config
    from server.wechat import UpstreamError
    from server.wechat.v2.client import WeChatClient
    from tests.support import DEMO
    body = wxpay.signed_xml(fields, DEMO["api_key"])
    server = await RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]).start()
    base = server.url[:-2]
    client = WeChatClient(Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                                 api_key=DEMO["api_key"], notify_url="http://127.0.0.1:1/wechat/pay/notify",
                                 pay_base_url=base, login_base_url=base, timeout=3))
    try:
        if ok:
            assert (await getattr(client, call)("T1"))["result_code"] == "SUCCESS"
        else:
            with pytest.raises(UpstreamError):
                await getattr(client, call)("T1")
    finally:
        client.close()
        await server.close()


@pytest.mark.parametrize("fields, expected", [
    ({"refund_count": "9" * 5001}, None),      # int() of over 4300 digits: ValueError, a 500
    ({"refund_count": "51"}, None),            # WeChat takes 50 refunds of an order
    ({"refund_count": "1", "out_refund_no_0": "R1", "refund_fee_0": "9" * 5001, "refund_status_0": "SUCCESS"},
     [{"out_refund_no": "R1", "refund_id": None, "refund_fee": None, "refund_status": "SUCCESS",
       "success_time": None}]),
])
@GEN
async def test_refundquery_numbers_are_read_bounded(fields, expected):
    """A number in a (signed) refundquery answer is read with a cap on its digits and value:
    an unreadable count is an UpstreamError, an unreadable amount no amount (None)."""
    from server.wechat.v2 import wire as wxpay
    from server.config import Config
    from server.wechat import UpstreamError
    from server.wechat.v2.client import WeChatClient
    from tests.support import DEMO
    body = wxpay.signed_xml(_answer(trade_state=None, **fields), DEMO["api_key"])
    server = await RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]).start()
    base = server.url[:-2]
    client = WeChatClient(Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                                 api_key=DEMO["api_key"], notify_url="http://127.0.0.1:1/wechat/pay/notify",
                                 pay_base_url=base, login_base_url=base, timeout=3))
    try:
        if expected is None:
            with pytest.raises(UpstreamError):
                await client.refund_query("R1")
        else:
            assert await client.refund_query("R1") == expected
    finally:
        client.close()
        await server.close()


# -- review findings -----------------------------------------------------------------------
@GEN
async def test_a_cancel_arriving_as_the_connect_completes_still_ends_the_request():
    """3.11's wait_for dropped such a cancel: the request then ran on without a deadline and
    kept its per-host slot forever."""
    writers, stop = [], asyncio.Event()

    async def silent(reader, writer):
        writers.append(writer)
        try:
            await stop.wait()          # never answers while the test runs
        finally:
            writer.close()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = "http://127.0.0.1:%d/" % server.sockets[0].getsockname()[1]
    pool = upstream.Pool(connect_timeout=5, max_per_host=1, proxy=upstream.Proxy(environ={}))
    gate = asyncio.get_running_loop().create_future()
    real_open = pool._open

    async def gated_open(*args):
        connection = await real_open(*args)
        try:
            await gate
        except BaseException:
            connection[1].close()
            raise
        return connection
    pool._open = gated_open
    request = asyncio.ensure_future(pool.fetch("GET", url, None, {}, 10))
    await asyncio.sleep(0.2)
    gate.set_result(None)
    request.cancel()                       # in the same loop turn as the connect completing
    done, _ = await asyncio.wait([request], timeout=2)
    assert done, "the cancelled request did not end"
    pool._open = real_open
    with pytest.raises(asyncio.TimeoutError):      # the slot is free again: this one waits on
        await pool.fetch("GET", url, None, {}, 0.3)  # the silent server, not on the slot
    pool.close()
    server.close()
    stop.set()
    await asyncio.sleep(0.05)


@GEN
async def test_a_204_carrying_a_body_is_not_pooled():
    server = await RawServer([b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", OK]).start()
    pool = upstream.Pool(connect_timeout=2)
    assert await fetch(pool, server) == (204, b"")
    assert await fetch(pool, server) == (200, b"ok")   # on a new connection, not after "hello"
    assert server.connections == 2
    await done(pool, server)


@GEN
async def test_every_expired_idle_connection_is_retired_not_just_the_newest():
    now = [0.0]
    hold = asyncio.Event()
    server = await RawServer([OK], hold=hold).start()
    pool = upstream.Pool(connect_timeout=2, idle_timeout=30, clock=lambda: now[0])
    calls = [asyncio.ensure_future(fetch(pool, server)) for _ in range(5)]
    await asyncio.sleep(0.2)
    hold.set()
    for call in calls:
        await call
    assert server.connections == 5
    for t in (20, 40, 60):                 # one call every 20 s reuses the newest connection
        now[0] = t
        await fetch(pool, server)
    key = next(iter(pool._idle))
    assert len(pool._idle[key]) == 1       # the four left idle since t=0 were closed
    await done(pool, server)


def test_environment_proxies_are_checked_once_and_never_echoed():
    with pytest.raises(ValueError) as info:
        upstream.Proxy(environ={"HTTPS_PROXY": "http://user:s3cr/et@proxy.corp:3128"})
    assert "s3cr" not in str(info.value)
    with pytest.raises(ValueError):
        upstream.Proxy(environ={"HTTPS_PROXY": "https://proxy.corp:3128"})
    both = upstream.Proxy(environ={"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"})
    assert both.for_target("https", "api.mch.weixin.qq.com")[:2] == ("lower", 2)   # lowercase wins
    unset = upstream.Proxy(environ={"HTTPS_PROXY": "http://upper:1", "https_proxy": ""})
    assert unset.for_target("https", "api.mch.weixin.qq.com") is None
    by_port = upstream.Proxy(environ={"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:9000"})
    assert by_port.for_target("http", "127.0.0.1", 9000) is None
    assert by_port.for_target("http", "127.0.0.1", 9001) is not None


def test_a_malformed_environment_proxy_stops_start_up_without_its_value():
    from server.config import Config, ConfigError
    from tests.support import DEMO
    env = {"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"], "WECHAT_MCH_ID": DEMO["mch_id"],
           "WECHAT_API_KEY": DEMO["api_key"], "WECHAT_NOTIFY_URL": "https://shop.example/wechat/pay/notify",
           "HTTPS_PROXY": "http://user:s3cr/et@proxy.corp:3128"}
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    assert "HTTPS_PROXY" in str(info.value) and "s3cr" not in str(info.value)
    assert Config.from_env(dict(env, WECHAT_PROXY="http://ok:3128"))   # an explicit proxy wins


@pytest.mark.parametrize("wire", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
])
def test_split_at_every_byte_the_parser_stops_exactly_at_the_end(wire):
    for cut in range(len(wire) + 1):
        status, body, rest = _parse_pieces([wire[:cut], wire[cut:] + b"NEXT"])
        assert status in (200, 204) and body == (b"" if status == 204 else b"hello"), cut
        assert rest == b"NEXT", cut          # nothing of the next answer was eaten


def _parse_pieces(pieces):
    async def parse():
        reader = asyncio.StreamReader(limit=upstream.MAX_HEADER_BYTES)
        for piece in pieces:
            reader.feed_data(piece)
        reader.feed_eof()
        status, _, body = await upstream._exchange(reader, _NullWriter(), b"", "POST", reused=False)
        return status, body, await reader.read()
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(parse())
    finally:
        loop.close()


@pytest.mark.parametrize("total_fee, expected", [("800", 800), ("0800", None), (" 800", None), ("8e2", None),
                                                 ("9" * 5001, None)])
@GEN
async def test_orderquery_total_fee_reaches_the_service_as_int_fen(total_fee, expected):
    """The v2 wire's plain decimal digits become int fen; anything else is no amount (None),
    which the service refuses to record as paid."""
    from server.wechat.v2 import wire as wxpay
    from server.config import Config
    from server.wechat.v2.client import WeChatClient
    from tests.support import DEMO
    body = wxpay.signed_xml(_answer(trade_state="SUCCESS", total_fee=total_fee), DEMO["api_key"])
    server = await RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]).start()
    base = server.url[:-2]
    client = WeChatClient(Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                                 api_key=DEMO["api_key"], notify_url="http://127.0.0.1:1/wechat/pay/notify",
                                 pay_base_url=base, login_base_url=base, timeout=3))
    try:
        answer = await client.order_query("T1")
        assert answer["total_fee"] == expected and answer["trade_state"] == "SUCCESS"
    finally:
        client.close()
        await server.close()
