"""The simulator's console (/sim/console): its page and static files, its snapshot
(/sim/console/state), the phone endpoint (POST /sim/orders/<no>/phone), masked keys; in process.
The browser tests that click through it are elsewhere."""
import json
import os
import re

import pytest
import tornado.testing
import tornado.web
from tornado.httpclient import HTTPRequest

from simulator import cli as run_simulator   # run_simulator.py's command line
from simulator.plane import console
from simulator.app import make_app, make_server
from simulator.config import SimConfig
from simulator.rules import PREPAY_TTL
from simulator.state import State
from tests.support.sim import (Receiver, stop_simulator, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, DEMO_SECRET,
                               call, new_order, order_fields, pay_params, post_xml, signed_xml,
                               simulator_process, wait_for)

TIME_SCALE = 0.001
SANDBOX_KEY = SimConfig.demo().merchants[DEMO_MCH_ID].sandbox_key
SECRETS = (DEMO_API_KEY, DEMO_SECRET, SANDBOX_KEY)


@pytest.fixture
def received():
    return []


def make(received, time_scale=TIME_SCALE):
    application = make_app(State(SimConfig.demo(), time_scale=time_scale), notify_timeout=2.0)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"received": received})])
    return application


def delivered(application):
    """No notification attempt is still in flight (none is destroyed with the test's loop)."""
    return all(n["outcome"] != "pending" for n in application.sim_state.notifications)


@pytest.fixture
def app(io_loop, received):
    application = make(received)
    yield application
    io_loop.run_sync(lambda: wait_for(lambda: delivered(application)))
    stop_simulator(application, io_loop)


def serve(application):
    """A second simulator in the test's IOLoop: (server, base URL)."""
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(application)
    server.add_sockets([sock])
    return server, "http://127.0.0.1:%d" % port


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def fetch(client, url, **kwargs):
    return await client.fetch(HTTPRequest(url, **kwargs), raise_error=False)


async def order(client, base, no="C1", **overrides):
    overrides.setdefault("notify_url", base + "/test-notify")
    prepay_id, _ = await new_order(client, base, no, **overrides)
    return prepay_id


async def phone(client, base, no, result, headers=None, query=""):
    resp = await fetch(client, base + "/sim/orders/%s/phone%s" % (no, query), method="POST",
                       body=json.dumps({"result": result}), headers=headers)
    return resp.code, json.loads(resp.body)


async def state(client, base, query=""):
    status, data = await call(client, base + "/sim/console/state" + query)
    assert status == 200, data
    return data


# --- the page and its files ----------------------------------------------------------

SCRIPTS = ["/sim/console/static/common.js", "/sim/console/static/rows.js",
           "/sim/console/static/console.js"]
ASSETS = dict({path: "text/javascript; charset=utf-8" for path in SCRIPTS},
              **{"/sim/console/static/order.js": "text/javascript; charset=utf-8",
                 "/sim/console/static/console.css": "text/css; charset=utf-8"})


@pytest.mark.gen_test
async def test_page_served_as_html_with_sections_and_hooks(http_client, base, app):
    resp = await fetch(http_client, base + "/sim/console")
    assert resp.code == 200
    assert resp.headers["Content-Type"] == "text/html; charset=UTF-8"
    page = resp.body.decode("utf-8")
    for section in ("orders", "notifications", "requests", "faults", "clock", "config"):
        assert '<section id="%s">' % section in page
    for hook in ('<form id="fault-form"', '<select name="path">', '<select name="kind">',
                 '<input name="value"', '<input name="probability"', '<input name="count"',
                 'type="submit"', 'id="clear-faults"', 'id="advance-seconds"', 'id="advance"',
                 'id="reset"'):
        assert hook in page, hook
    for path in ("/pay/unifiedorder", "/pay/orderquery", "/sns/jscode2session"):
        assert '<option value="%s">' % path in page
    for kind in ("latency", "status", "system_error", "malformed", "bad_sign", "drop"):
        assert '<option value="%s">' % kind in page
    # it says what it is and where it listens (the address it was reached at)
    assert "Development tool" in page
    assert '<code id="listen-address">127.0.0.1:%s</code>' % base.rsplit(":", 1)[1] in page
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert (await fetch(http_client, base + "/sim/console/")).code == 200


@pytest.mark.gen_test
async def test_static_files_with_their_content_types(http_client, base, app):
    for path, content_type in ASSETS.items():
        resp = await fetch(http_client, base + path)
        assert resp.code == 200 and resp.headers["Content-Type"] == content_type, path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert len(resp.body) > 1000
    assert (await fetch(http_client, base + "/sim/console/static/nothing.js")).code == 404
    resp = await fetch(http_client, base + "/sim/console/static/../../console.py")
    assert resp.code in (403, 404) and b"mask_secret" not in resp.body
    resp = await fetch(http_client, base + "/sim/console/static/%2e%2e/%2e%2e/console.py")
    assert resp.code in (403, 404) and b"mask_secret" not in resp.body


EXTERNAL = [
    re.compile(r"https?:", re.I),                                   # any absolute web URL
    re.compile(r"""(src|href|action)\s*=\s*["']?\s*//""", re.I),    # protocol-relative
    re.compile(r"""url\(\s*["']?\s*(//|[a-z]+:)""", re.I),          # CSS url() elsewhere
    re.compile(r"@import", re.I),
]
ATTRIBUTE = re.compile(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)["']""", re.I)
LOCAL = ("/sim/console/static/", "data:", "#")


@pytest.mark.gen_test
async def test_nothing_refers_outside_the_simulator(http_client, base, app):
    bodies = {"page": (await fetch(http_client, base + "/sim/console")).body}
    for path in ASSETS:
        bodies[path] = (await fetch(http_client, base + path)).body
    for name, body in bodies.items():
        text = body.decode("utf-8")
        for pattern in EXTERNAL:
            assert not pattern.search(text), (name, pattern.pattern, pattern.search(text))
    page = bodies["page"].decode("utf-8")
    assert all(value.startswith(LOCAL) for value in ATTRIBUTE.findall(page)), ATTRIBUTE.findall(page)
    script = "\n".join(bodies[path].decode("utf-8") for path in ASSETS if path.endswith(".js"))
    # every path it requests is the simulator's: /sim/..., or a suffix appended to one
    paths = re.findall(r"""['"](/[^'"]*)['"]""", script)
    assert "/sim/console/state" in paths and "/sim/console/events" in paths, paths
    assert all(p.startswith("/sim/") or re.fullmatch(r"/[a-z-]*(\?[a-z_]+=)?", p)
               for p in paths), paths
    assert re.findall(r'src="([^"]*)"', page) == SCRIPTS
    assert sorted(re.findall(r'href="([^"#]*)"', page)) == ["/sim/console/static/console.css",
                                                             "data:,"]
    # the files on disk are the ones served (nothing else lies in the static folder)
    assert sorted(os.listdir(console.STATIC_DIR)) == sorted(p.rsplit("/", 1)[1] for p in ASSETS)


# --- the phone -----------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_phone_pays_and_notification_starts(http_client, base, app, received):
    await order(http_client, base, "C1")
    status, data = await phone(http_client, base, "C1", "SUCCESS")
    assert status == 200, data
    assert data["errMsg"] == "requestPayment:ok" and data["trade_state"] == "SUCCESS"
    assert len(data["transaction_id"]) == 28 and data["order"]["trade_state"] == "SUCCESS"
    assert await wait_for(lambda: received)
    assert b"<out_trade_no><![CDATA[C1]]></out_trade_no>" in received[0]
    assert data["transaction_id"].encode() in received[0]
    assert await wait_for(lambda: app.sim_state.orders[(DEMO_MCH_ID, "C1")].notify_delivered)
    snap = await state(http_client, base)
    assert snap["orders"][0]["phone"]["result"] == "SUCCESS"
    assert snap["orders"][0]["payable"] is False
    assert snap["orders"][0]["unpayable"]["code"] == "ORDER_PAID"
    assert snap["notifications"][0]["outcome"] == "success"
    entry = snap["requests"][0]
    assert entry["api"] == "wx.requestPayment (console)" and entry["verdict"] == "ok"
    assert entry["out_trade_no"] == "C1" and entry["result"] == "SUCCESS"
    # paid: the phone refuses, like /sim/pay does
    status, data = await phone(http_client, base, "C1", "SUCCESS")
    assert status == 409 and data["error"]["code"] == "ORDER_PAID"


@pytest.mark.gen_test
async def test_phone_cancel_changes_nothing_at_wechat(http_client, base, app, received):
    prepay_id = await order(http_client, base, "C2")
    status, data = await phone(http_client, base, "C2", "CANCEL")
    assert status == 200, data
    assert data["errMsg"] == "requestPayment:fail cancel" and data["trade_state"] == "NOTPAY"
    assert data["transaction_id"] == ""
    snap = await state(http_client, base)
    row = snap["orders"][0]
    assert row["trade_state"] == "NOTPAY" and row["payable"] is True
    assert row["phone"]["result"] == "CANCEL" and row["phone"]["errMsg"].endswith("cancel")
    assert snap["requests"][0]["verdict"] == "error requestPayment:fail cancel"
    assert not snap["notifications"] and not received
    # still payable afterwards, by the console or by the Mini Program's /sim/pay
    status, data = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 200, data


@pytest.mark.gen_test
async def test_phone_fail_is_payerror(http_client, base, app, received):
    await order(http_client, base, "C3")
    status, data = await phone(http_client, base, "C3", "FAIL")
    assert status == 200 and data["trade_state"] == "PAYERROR"
    assert "PAYERROR" in data["errMsg"]
    _, stored = await call(http_client, base + "/sim/orders/C3")
    assert stored["trade_state"] == "PAYERROR"
    assert not received


@pytest.mark.gen_test
async def test_phone_refuses_closed_expired_unknown_and_bad_input(http_client, base, app):
    await order(http_client, base, "K1")
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "n", "out_trade_no": "K1"}
    _, closed = await post_xml(http_client, base + "/pay/closeorder", signed_xml(fields))
    assert closed["result_code"] == "SUCCESS", closed
    status, data = await phone(http_client, base, "K1", "SUCCESS")
    assert status == 409 and data["error"]["code"] == "ORDER_CLOSED"

    await order(http_client, base, "K2")
    await call(http_client, base + "/sim/clock", "POST",
               {"advance": PREPAY_TTL * TIME_SCALE + 1})
    status, data = await phone(http_client, base, "K2", "SUCCESS")
    assert status == 409 and data["error"]["code"] == "PREPAY_EXPIRED"
    snap = await state(http_client, base)
    k2 = [o for o in snap["orders"] if o["out_trade_no"] == "K2"][0]
    assert k2["prepay_expired"] is True and k2["payable"] is False
    assert k2["trade_state"] == "NOTPAY"

    status, data = await phone(http_client, base, "NOPE", "SUCCESS")
    assert status == 404 and data["error"]["code"] == "ORDER_NOT_FOUND"
    await order(http_client, base, "K3")
    status, data = await phone(http_client, base, "K3", "MAYBE")
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"
    resp = await fetch(http_client, base + "/sim/orders/K3/phone", method="POST", body="[")
    assert resp.code == 400
    # no result: SUCCESS, as for /sim/pay
    resp = await fetch(http_client, base + "/sim/orders/K3/phone", method="POST", body="")
    assert resp.code == 200 and json.loads(resp.body)["trade_state"] == "SUCCESS"


@pytest.mark.gen_test
async def test_phone_respects_time_expire(http_client, base, app):
    await order(http_client, base, "E1", time_expire="20200101000000")
    status, data = await phone(http_client, base, "E1", "SUCCESS")
    assert status == 409 and data["error"]["code"] == "ORDER_EXPIRED"


@pytest.mark.gen_test
async def test_phone_refuses_another_web_pages_request(http_client, base, app):
    await order(http_client, base, "X1")
    status, data = await phone(http_client, base, "X1", "SUCCESS",
                               headers={"Origin": "https://evil.example"})
    assert status == 403 and data["error"]["code"] == "CROSS_ORIGIN"
    status, _ = await phone(http_client, base, "X1", "CANCEL", headers={"Origin": "null"})
    assert status == 403
    status, data = await phone(http_client, base, "X1", "SUCCESS",
                               headers={"Origin": "http://[::1"})      # no URL at all
    assert status == 403 and data["error"]["code"] == "CROSS_ORIGIN", data
    assert app.sim_state.orders[(DEMO_MCH_ID, "X1")].trade_state == "NOTPAY"
    # the console itself: same origin
    status, _ = await phone(http_client, base, "X1", "SUCCESS",
                            headers={"Origin": base})
    assert status == 200


@pytest.mark.gen_test
async def test_phone_names_the_merchant_when_two_share_an_order_number(http_client, io_loop,
                                                                       received):
    config = SimConfig.from_dict({
        "apps": [{"appid": DEMO_APPID, "secret": DEMO_SECRET}],
        "merchants": [{"mch_id": DEMO_MCH_ID, "api_key": DEMO_API_KEY, "appids": [DEMO_APPID]},
                      {"mch_id": "1002", "api_key": "b" * 32, "appids": [DEMO_APPID]}]})
    st = State(config, time_scale=TIME_SCALE)
    login = st.issue_code(DEMO_APPID, "alice")
    merchants = list(config.merchants.values())
    for merchant in merchants:
        st.unified_order(merchant, order_fields(login.openid, "SAME"), False)
    application = make_app(st)
    try:
        server, base = serve(application)
        status, data = await phone(http_client, base, "SAME", "FAIL")
        assert status == 409 and data["error"]["code"] == "AMBIGUOUS"
        status, data = await phone(http_client, base, "SAME", "FAIL", query="?mch_id=1002")
        assert status == 200 and data["mch_id"] == "1002"
        assert st.orders[("1002", "SAME")].trade_state == "PAYERROR"
        assert st.orders[(DEMO_MCH_ID, "SAME")].trade_state == "NOTPAY"
        server.stop()
    finally:
        application.shutdown()


@pytest.mark.gen_test
async def test_sim_pay_results_show_in_the_console_too(http_client, base, app):
    prepay_id = await order(http_client, base, "M1")
    params = dict(pay_params(prepay_id), result="CANCEL")
    status, _ = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 400
    snap = await state(http_client, base)
    assert snap["orders"][0]["phone"]["result"] == "CANCEL"


# --- the snapshot --------------------------------------------------------------------

@pytest.mark.gen_test
async def test_snapshot_shape(http_client, base, app):
    await order(http_client, base, "S1")
    await order(http_client, base, "S2")
    await call(http_client, base + "/sim/faults", "POST",
               {"path": "/pay/orderquery", "kind": "latency", "value": 5})
    snap = await state(http_client, base)
    assert sorted(snap) == ["clock", "config", "faults", "notifications", "orders", "pending",
                            "refund_delay", "refund_delay_scaled", "refunds", "requests",
                            "revision", "seed", "stats", "ttl"]
    assert [o["out_trade_no"] for o in snap["orders"]] == ["S2", "S1"]       # newest first
    s2 = snap["orders"][0]
    for field in ("trade_state", "total_fee", "openid", "sign_type", "prepay_id",
                  "prepay_expires_at", "payable", "unpayable", "phone", "time_expire"):
        assert field in s2
    assert s2["payable"] is True and s2["total_fee"] == 100 and s2["sign_type"] == "MD5"
    seqs = [r["seq"] for r in snap["requests"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    assert snap["faults"][0]["kind"] == "latency"
    assert snap["clock"]["time_scale"] == TIME_SCALE
    assert snap["ttl"]["prepay"] == PREPAY_TTL * TIME_SCALE
    assert len((await state(http_client, base, "?requests=1"))["requests"]) == 1
    assert (await state(http_client, base, "?requests=0"))["requests"] == []
    status, data = await call(http_client, base + "/sim/console/state?requests=x")
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"


@pytest.mark.gen_test
async def test_snapshot_reads_change_nothing(http_client, base, app):
    await order(http_client, base, "R1")
    before = json.dumps([o.to_json() for o in app.sim_state.orders.values()], sort_keys=True)
    count = len(app.sim_state.requests)
    for _ in range(3):
        await state(http_client, base)
        await fetch(http_client, base + "/sim/console")
    assert json.dumps([o.to_json() for o in app.sim_state.orders.values()],
                      sort_keys=True) == before
    assert len(app.sim_state.requests) == count       # the console's reads are not logged


@pytest.mark.gen_test
async def test_bad_signature_explained_in_the_snapshot(http_client, base, app):
    await order(http_client, base, "B0")
    _, openid = await new_order(http_client, base, "B1")
    await post_xml(http_client, base + "/pay/unifiedorder",
                   signed_xml(order_fields(openid, "B2"), key=DEMO_SECRET))
    entry = (await state(http_client, base))["requests"][0]
    assert entry["signature"] == "bad" and entry["verdict"].startswith("signature bad")
    x = entry["explanation"]
    assert x["string_to_sign"].endswith("&key=" + "*" * 32)
    assert x["expected_sign"] != x["received_sign"]
    assert any("AppSecret" in hint for hint in x["hints"])


@pytest.mark.gen_test(timeout=10)
async def test_next_retry_time_of_a_failed_attempt(http_client, io_loop):
    application = make([], time_scale=1.0)       # 15 s to the first retry: still pending
    server, base = serve(application)
    try:
        await order(http_client, base, "N1", notify_url="http://127.0.0.1:1/refused")
        status, _ = await phone(http_client, base, "N1", "SUCCESS")
        assert status == 200
        assert await wait_for(lambda: application.sim_state.notifications
                              and application.sim_state.notifications[0]["outcome"] != "pending")
        snap = await state(http_client, base)
        first = snap["notifications"][0]
        assert first["outcome"] == "error" and first["attempt"] == 1
        assert first["next_retry_at"] == pytest.approx(first["next_attempt_at"], abs=0.01)
        assert 14 < first["next_retry_at"] - first["time"] < 16
        assert snap["pending"][0]["attempt"] == 2
        # delivered by a resend: no retry pending any more
        await call(http_client, base + "/sim/reset", "POST")
        await order(http_client, base, "N2", notify_url="http://127.0.0.1:1/refused")
        await phone(http_client, base, "N2", "SUCCESS")
        assert await wait_for(lambda: application.sim_state.notifications
                              and application.sim_state.notifications[-1]["outcome"] != "pending")
        application.add_handlers(r".*", [(r"/late", Receiver, {"received": []})])
        application.sim_state.orders[(DEMO_MCH_ID, "N2")].fields["notify_url"] = base + "/late"
        status, _ = await call(http_client, base + "/sim/orders/N2/notify", "POST",
                               {"mode": "normal"})
        assert status == 200
        snap = await state(http_client, base)
        assert [n["next_retry_at"] for n in snap["notifications"]] == [None, None]
        assert snap["pending"] == []
    finally:
        server.stop()
        application.shutdown()


# --- secrets -------------------------------------------------------------------------

def test_mask_secret():
    assert console.mask_secret(DEMO_API_KEY) == DEMO_API_KEY[:4] + "*" * 24 + DEMO_API_KEY[-4:]
    assert console.mask_secret("abcdefghij") == "ab******ij"
    assert console.mask_secret("short") == "*****"
    assert console.mask_secret("") == ""


@pytest.mark.gen_test
async def test_no_console_response_carries_a_secret(http_client, base, app):
    """Keys masked in the snapshot; the demo API key, AppSecret and sandbox key appear in no
    console response, even after calls that involve them."""
    await order(http_client, base, "Z1")
    _, openid = await new_order(http_client, base, "Z2")
    await post_xml(http_client, base + "/pay/unifiedorder",
                   signed_xml(order_fields(openid, "Z3"), key=DEMO_SECRET))
    await post_xml(http_client, base + "/sandboxnew/pay/unifiedorder",
                   signed_xml(order_fields(openid, "Z4"), key=DEMO_API_KEY))
    await post_xml(http_client, base + "/sandboxnew/pay/getsignkey",
                   signed_xml({"mch_id": DEMO_MCH_ID, "nonce_str": "n"}))
    await fetch(http_client, "%s/sns/jscode2session?appid=%s&secret=%s&js_code=x"
                % (base, DEMO_APPID, DEMO_SECRET))
    await phone(http_client, base, "Z1", "SUCCESS")
    await phone(http_client, base, "Z1", "SUCCESS")
    snap = await state(http_client, base)
    merchant = snap["config"]["merchants"][0]
    assert merchant == {"mch_id": DEMO_MCH_ID, "appids": [DEMO_APPID],
                        "api_key_masked": console.mask_secret(DEMO_API_KEY),
                        "sandbox_key_masked": console.mask_secret(SANDBOX_KEY)}
    assert snap["config"]["apps"] == [{"appid": DEMO_APPID,
                                       "secret_masked": console.mask_secret(DEMO_SECRET)}]
    assert any(r.get("explanation") for r in snap["requests"])
    urls = ["/sim/console", "/sim/console/state", "/sim/config", "/sim/requests",
            "/sim/orders", "/sim/notifications", "/sim/faults", "/sim/clock"] + list(ASSETS)
    for url in urls:
        body = (await fetch(http_client, base + url)).body.decode("utf-8")
        for secret in SECRETS:
            assert secret not in body, (url, secret)


# --- banners -------------------------------------------------------------------------

def test_run_simulator_banner_names_the_console():
    text = run_simulator.banner("http://127.0.0.1:9000", SimConfig.demo(), 1.0)
    lines = text.splitlines()
    assert "  console         http://127.0.0.1:9000/sim/console" in lines
    assert lines.index("  console         http://127.0.0.1:9000/sim/console") == \
        lines.index("  control plane   http://127.0.0.1:9000/sim/") + 1


def test_run_server_prints_the_console_url():
    import inspect
    from simulator import bundle
    source = inspect.getsource(bundle.start)
    assert "/sim/console" in source


@pytest.mark.e2e
def test_console_of_a_real_simulator_process():
    import requests
    with simulator_process("console") as proc:
        assert "  console         %s/sim/console" % proc.url in proc.output()
        page = requests.get(proc.url + "/sim/console", timeout=5)
        assert page.status_code == 200 and "Development tool" in page.text
        snap = requests.get(proc.url + "/sim/console/state", timeout=5).json()
        assert snap["orders"] == [] and snap["clock"]["time_scale"] == 0.001


@pytest.mark.gen_test
async def test_no_other_web_page_may_drive_the_control_plane(http_client, base, app):
    """A page of another origin (a cross-site form or fetch) is refused on every state-changing
    /sim/ call; the Mini Program's /sim/login and /sim/pay stay open (WeChat DevTools calls them)."""
    evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    for path, body in (("/sim/reset", "{}"), ("/sim/faults", '{"path": "/pay/unifiedorder", "kind": "drop"}'),
                       ("/sim/clock", '{"advance": 100}')):
        r = await http_client.fetch(base + path, method="POST", body=body, headers=evil, raise_error=False)
        assert r.code == 403 and json.loads(r.body)["error"]["code"] == "CROSS_ORIGIN", path
    r = await http_client.fetch(base + "/sim/faults", method="DELETE", headers=evil, raise_error=False)
    assert r.code == 403
    assert app.sim_state.faults == [] and app.sim_state.clock.offset == 0
    r = await http_client.fetch(base + "/sim/login", method="POST", headers=evil, raise_error=False,
                                body=json.dumps({"appid": DEMO_APPID, "user": "devtools"}))
    assert r.code == 200
    same = {"Origin": base}
    r = await http_client.fetch(base + "/sim/clock", method="POST", body='{"advance": 1}', headers=same,
                                raise_error=False)
    assert r.code == 200


@pytest.mark.gen_test
async def test_limits_take_ascii_digits_only(http_client, base, app):
    for path in ("/sim/console/state?requests=%C2%B2", "/sim/requests?limit=%C2%B2"):
        r = await http_client.fetch(base + path, raise_error=False)
        assert r.code == 400, path
    for _ in range(3):
        await http_client.fetch(base + "/sim/config")
        await http_client.fetch(base + "/pay/orderquery", method="POST", body=b"<xml></xml>", raise_error=False)
    r = await http_client.fetch(base + "/sim/requests?limit=50")
    assert len(json.loads(r.body)["requests"]) == 3           # every entry, not a negative slice
