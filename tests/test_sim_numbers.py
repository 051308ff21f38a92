"""Integers in the simulator's request data: ASCII digits, a length cap, a 400 in the shape of
the path (/sim/ JSON, WeChat v2 XML), never a 500. Python 3.11's int() refuses more than 4300
digits with ValueError, and math.isfinite() an int too large for a float with OverflowError."""
import asyncio
import json
import logging

import pytest

from simulator.v3 import keys as v3keys
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.sim import (DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, ext_sign, login, paid_order,
                               post_xml, refund_fields, signed_xml, stop_simulator)
from tests.support.sim3 import APIV3_KEY, APPID, MCHID, authorization

HUGE = "9" * 5001          # past int()'s 4300-digit limit
BIG = "9" * 4000           # within it: int() works, float() overflows


@pytest.fixture
def app(io_loop, request):
    """The simulator; with API v3 when a test asks for "v3" (indirect parametrisation)."""
    v3 = request.getfixturevalue("v3_setup") if getattr(request, "param", None) == "v3" else None
    application = make_app(State(SimConfig.demo(), time_scale=0.001, v3=v3), notify_timeout=2.0)
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def v3_setup(v3_dir, v3_merchant):
    return v3keys.prepare(v3_dir, MCHID, APPID, APIV3_KEY, merchant_cert=v3_merchant.cert_file)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def sim_error(resp, code="BAD_FIELD"):
    """A /sim/ 400 in its shape, short (not a traceback)."""
    assert resp.code == 400, resp.body[:200]
    assert len(resp.body) < 1000
    assert json.loads(resp.body)["error"]["code"] == code
    return json.loads(resp.body)["error"]["message"]


@pytest.mark.gen_test
@pytest.mark.parametrize("query", ["/sim/requests?limit=", "/sim/console/state?requests=",
                                   "/sim/console/state?notifications="])
async def test_a_limit_of_5001_digits_is_400_not_500(http_client, base, app, query):
    resp = await http_client.fetch(base + query + HUGE, raise_error=False)
    message = sim_error(resp)
    assert HUGE not in message


@pytest.mark.gen_test
async def test_limits_keep_working(http_client, base, app):
    for _ in range(3):
        await http_client.fetch(base + "/sim/config")
        await post_xml(http_client, base + "/pay/orderquery", b"<xml></xml>")
    resp = await http_client.fetch(base + "/sim/requests?limit=2")
    assert len(json.loads(resp.body)["requests"]) == 2
    resp = await http_client.fetch(base + "/sim/requests?limit=0")
    assert json.loads(resp.body)["requests"] == []
    resp = await http_client.fetch(base + "/sim/console/state?requests=1&notifications=0")
    assert len(json.loads(resp.body)["requests"]) == 1
    for query in ("/sim/requests?limit=-1", "/sim/requests?limit=%2B1",
                  "/sim/requests?limit=", "/sim/console/state?requests=100001",
                  "/sim/console/state?requests=%D9%A3"):
        sim_error(await http_client.fetch(base + query, raise_error=False))


async def raw_request(port, head):
    """Send a request head as is; (status line, everything the server sent until it closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), 4)
    finally:
        writer.close()
    return data.split(b"\r\n", 1)[0], data


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/sim/reset", "/sim/faults", "/pay/orderquery"])
async def test_a_content_length_of_5001_digits_is_400(http_server, http_port, app, path, caplog):
    app.sim_state.add_fault("/pay/unifiedorder", "drop")
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %s\r\n\r\n"
            % (path, http_port, HUGE)).encode()
    with caplog.at_level(logging.INFO):
        status, data = await raw_request(http_port, head)
    assert status == b"HTTP/1.1 400 Bad Request" and len(data) < 1000
    assert len(app.sim_state.faults) == 1 and len(app.sim_state.requests) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.gen_test
@pytest.mark.parametrize("path, body", [
    ("/sim/clock", {"advance": None}),
    ("/sim/faults", {"path": "/pay/orderquery", "kind": "latency", "value": None}),
    ("/sim/faults", {"path": "/pay/orderquery", "kind": "status", "value": None}),
    ("/sim/faults", {"path": "/pay/orderquery", "kind": "drop", "probability": None}),
    ("/sim/faults", {"path": "/pay/orderquery", "kind": "drop", "count": None}),
])
@pytest.mark.parametrize("digits", [BIG, HUGE], ids=["4000-digits", "5001-digits"])
async def test_a_json_number_of_thousands_of_digits_is_400(http_client, base, app, path, body,
                                                           digits):
    """A JSON number is parsed by json (5001 digits: BAD_JSON); 4000 digits parse to an int
    that math.isfinite() could not take (OverflowError: 500)."""
    name = next(k for k, v in body.items() if v is None)
    text = json.dumps(body).replace("null", digits)
    resp = await http_client.fetch(base + path, method="POST", body=text, raise_error=False)
    message = sim_error(resp, "BAD_JSON" if digits == HUGE else "BAD_FIELD")
    assert digits == HUGE or name in message
    assert app.sim_state.faults == [] and app.sim_state.clock.offset == 0


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("kind", ["payment", "refund"])
async def test_a_notify_count_of_4000_digits_is_400(http_client, base, app, kind):
    await paid_order(http_client, base, "N1")
    path = "/sim/orders/N1/notify"
    if kind == "refund":
        fields = refund_fields(out_trade_no="N1", notify_url="http://127.0.0.1:1/n")
        await post_xml(http_client, base + "/secapi/pay/refund", signed_xml(fields))
        # the fixture's time scale may settle it first (409 then): either way it is SUCCESS
        await http_client.fetch(base + "/sim/refunds/R1", method="POST", body='{"status": "SUCCESS"}',
                                raise_error=False)
        assert next(iter(app.sim_state.refunds.values())).refund_status == "SUCCESS"
        path = "/sim/refunds/R1/notify"
    resp = await http_client.fetch(base + path, method="POST", raise_error=False,
                                   body='{"mode": "normal", "count": %s}' % BIG)
    assert "count" in sim_error(resp)


async def refundquery(http_client, base, offset):
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "q",
              "out_trade_no": "P1", "offset": offset}
    resp, data = await post_xml(http_client, base + "/pay/refundquery", signed_xml(fields))
    return resp, data


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("offset", [HUGE, "0" * 4301, "\u00b2", "\u0660", "+0"])
async def test_a_refundquery_offset_not_of_ascii_digits_is_param_error(http_client, base, app,
                                                                       offset):
    """WeChat's business error (signed, result_code FAIL, PARAM_ERROR), as for an offset past
    the last refund; "\u0660" (Arabic-Indic zero) and "\u00b2" pass str.isdigit()."""
    await paid_order(http_client, base, "P1")
    await post_xml(http_client, base + "/secapi/pay/refund", signed_xml(refund_fields()))
    resp, data = await refundquery(http_client, base, offset)
    assert resp.code == 200 and data is not None, resp.body[:200]
    assert (data["return_code"], data["result_code"], data["err_code"]) == (
        "SUCCESS", "FAIL", "PARAM_ERROR"), data
    assert data["sign"] == ext_sign(data, DEMO_API_KEY)
    resp, data = await refundquery(http_client, base, "0")
    assert data["result_code"] == "SUCCESS" and data["out_refund_no_0"] == "R1"


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("app", ["v3"], indirect=True)
@pytest.mark.parametrize("total", [BIG, HUGE, "1e400", "100.0"])
async def test_a_v3_amount_that_is_no_fen_is_param_error(http_client, base, app, v3_merchant,
                                                         total):
    """A signed JSAPI order whose amount.total is no integer fen: WeChat's 400 PARAM_ERROR."""
    _, openid = await login(http_client, base)
    body = ('{"appid":"%s","mchid":"%s","description":"Coffee","out_trade_no":"BIGFEE001",'
            '"notify_url":"http://127.0.0.1:1/n","amount":{"total":%s,"currency":"CNY"},'
            '"payer":{"openid":"%s"}}' % (APPID, MCHID, total, openid))
    path = "/v3/pay/transactions/jsapi"
    resp = await http_client.fetch(base + path, method="POST", body=body, raise_error=False, headers={
        "Accept": "application/json", "Content-Type": "application/json",
        "Authorization": authorization(v3_merchant, "POST", path, body)})
    assert resp.code == 400 and json.loads(resp.body)["code"] == "PARAM_ERROR", resp.body[:300]
    assert app.sim_state.orders == {}
