"""The console's push channel (GET /sim/console/events, Server-Sent Events) and the state's
revision, in process: the hello, a change after each kind of change, coalescing, the bound on
open streams, a client going away, and shutdown with a stream open."""
import json

import pytest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.sim import (DEMO_MCH_ID, Receiver, call, new_order, pay_params, post_xml,
                               refund_fields, signed_xml, stop_simulator, wait_for)

TIME_SCALE = 0.001


@pytest.fixture
def app(io_loop):
    application = make_app(State(SimConfig.demo(), time_scale=TIME_SCALE), notify_timeout=2.0)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"received": []})])
    yield application
    io_loop.run_sync(lambda: wait_for(lambda: all(
        n["outcome"] != "pending" for n in application.sim_state.notifications)))
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


class Stream:
    """One raw SSE client (HTTP/1.0: no chunked framing), closable at will."""

    def __init__(self, conn, head):
        self.conn, self.head = conn, head

    @classmethod
    async def open(cls, port, path="/sim/console/events", origin=None):
        conn = await TCPClient().connect("127.0.0.1", port)
        extra = "Origin: %s\r\n" % origin if origin else ""
        await conn.write(("GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (path, port, extra))
                         .encode("ascii"))
        head = (await conn.read_until(b"\r\n\r\n")).decode("latin-1")
        return cls(conn, head)

    @property
    def status(self):
        return int(self.head.split(" ", 2)[1])

    async def frame(self):
        """(event, data) of the next frame; ("retry", ms) or ("ping", None) for those."""
        text = (await self.conn.read_until(b"\n\n")).decode("utf-8")
        fields = dict(line.split(": ", 1) for line in text.strip("\n").split("\n")
                      if not line.startswith(":"))
        if text.startswith(": ping"):
            return "ping", None
        if "retry" in fields:
            return "retry", int(fields["retry"])
        return fields["event"], json.loads(fields["data"])

    async def change(self):
        event, data = await self.frame()
        assert event == "change", (event, data)
        return data

    async def hello(self):
        assert self.status == 200, self.head
        assert "Content-Type: text/event-stream" in self.head
        assert await self.frame() == ("retry", 2000)
        event, data = await self.frame()
        assert event == "hello"
        return data["revision"]

    def close(self):
        self.conn.close()


@pytest.mark.gen_test
async def test_hello_names_the_revision_the_state_snapshot_answers(http_client, base, app,
                                                                   http_port):
    stream = await Stream.open(http_port)
    revision = await stream.hello()
    _, snapshot = await call(http_client, base + "/sim/console/state")
    assert snapshot["revision"] == revision == app.sim_state.revision
    stream.close()


@pytest.mark.gen_test
async def test_a_change_after_order_created_paid_notified_refunded_and_clock(
        http_client, base, app, http_port):
    stream = await Stream.open(http_port)
    revision = await stream.hello()
    prepay_id, _ = await new_order(http_client, base, "E1", notify_url=base + "/test-notify")
    change = await stream.change()
    assert change["revision"] > revision and "orders" in change["what"]
    status, _ = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 200
    seen = set()
    while not {"orders", "notifications"} <= seen:     # paid, then the attempt's outcome
        seen.update((await stream.change())["what"])
    assert await wait_for(lambda: app.sim_state.orders[(DEMO_MCH_ID, "E1")].notify_delivered)
    resp, data = await post_xml(http_client, base + "/secapi/pay/refund", signed_xml(
        refund_fields("ER1", out_trade_no="E1", notify_url=base + "/test-notify")))
    assert data["result_code"] == "SUCCESS", data
    while "refunds" not in seen:
        seen.update((await stream.change())["what"])
    status, _ = await call(http_client, base + "/sim/clock", "POST", {"advance": 86400})
    assert status == 200
    while True:
        change = await stream.change()
        if "clock" in change["what"]:
            break
    assert "bills" in change["what"]       # a day passed: yesterday's bill exists now
    assert change["revision"] == app.sim_state.revision
    stream.close()


@pytest.mark.gen_test
async def test_changes_are_coalesced(app, http_port, http_server):
    stream = await Stream.open(http_port)
    await stream.hello()
    state = app.sim_state
    for _ in range(50):
        state.add_fault("/pay/orderquery", "latency", 1)
    state.set_refund_delay(3)
    change = await stream.change()
    assert change == {"revision": state.revision, "what": ["config", "faults"]}
    state.advance_clock(1)
    assert await stream.change() == {"revision": state.revision, "what": ["clock"]}
    stream.close()


@pytest.mark.gen_test
async def test_streams_are_bounded_and_a_client_going_away_frees_its_slot(app, http_port,
                                                                     http_server):
    events = app.sim_events
    events.limit = 2
    first, second = await Stream.open(http_port), await Stream.open(http_port)
    await first.hello()
    await second.hello()
    third = await Stream.open(http_port)
    assert third.status == 429, third.head
    body = json.loads(await third.conn.read_until_close())
    assert body["error"]["code"] == "TOO_MANY_STREAMS"
    first.close()
    assert await wait_for(lambda: len(events.streams) == 1)
    again = await Stream.open(http_port)
    await again.hello()
    second.close()
    again.close()
    assert await wait_for(lambda: not events.streams)


@pytest.mark.gen_test
async def test_shutdown_with_a_stream_open_ends_it(app, http_port, http_server):
    stream = await Stream.open(http_port)
    await stream.hello()
    app.shutdown()
    rest = await stream.conn.read_until_close()      # the server ended the response
    assert b"event: change" not in rest
    await http_server.close_all_connections()
    assert not app.sim_events.streams
    late = await Stream.open(http_port)
    assert late.status == 503, late.head
    with pytest.raises(StreamClosedError):
        await stream.frame()


@pytest.mark.gen_test
async def test_another_web_page_cannot_hold_streams_the_console_needs(app, http_port, http_server):
    """EventSource from another site sends its Origin: refused before it takes one of the
    bounded slots (the console's own page sends none, or its own)."""
    foreign = await Stream.open(http_port, origin="http://evil.test")
    assert foreign.status == 403 and '"CROSS_ORIGIN"' in (await foreign.conn.read_until_close()).decode()
    assert not app.sim_events.streams
    own = await Stream.open(http_port, origin="http://127.0.0.1:%d" % http_port)
    await own.hello()
    own.close()
