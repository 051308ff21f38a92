"""The /sim/ control plane: requestPayment, orders, faults, clock, reset, config, request log."""
import json
import time

import pytest
from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError

from simulator import config as sim_config
from simulator import state as sim_state
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support import DEMO
from tests.support.sim import (stop_simulator, DEMO_API_KEY, DEMO_APPID, DEMO_SECRET, call, ext_sign, login,
                               new_order, order_fields, pay_params, post_xml, signed_xml)


@pytest.fixture
def app(io_loop):
    application = make_app(State(SimConfig.demo(), time_scale=0.001), notify_timeout=2.0)
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def pay(http_client, base, params):
    return await call(http_client, base + "/sim/pay", "POST", params)


# --- /sim/pay ----------------------------------------------------------------------

@pytest.mark.gen_test
async def test_pay_success_marks_order_paid(http_client, base, app):
    prepay_id, _ = await new_order(http_client, base, "P1")
    status, data = await pay(http_client, base, pay_params(prepay_id))
    assert status == 200 and data["errMsg"] == "requestPayment:ok"
    assert len(data["transaction_id"]) == 28 and data["transaction_id"].startswith("4200")
    status, order = await call(http_client, base + "/sim/orders/P1")
    assert order["trade_state"] == "SUCCESS" and order["transaction_id"] == data["transaction_id"]
    assert app.sim_state.requests[-1]["signature"] == "ok"


@pytest.mark.gen_test
async def test_pay_hmac_order_needs_hmac_paysign(http_client, base, app):
    prepay_id, _ = await new_order(http_client, base, "H1", sign_type="HMAC-SHA256")
    status, data = await pay(http_client, base, pay_params(prepay_id))     # MD5
    assert status == 400 and data["errMsg"] == "requestPayment:fail 支付验证签名失败"
    hints = app.sim_state.requests[-1]["explanation"]["hints"]
    assert hints[0] == "signType is MD5 but unifiedorder used HMAC-SHA256: they must be equal"
    status, _ = await pay(http_client, base, pay_params(prepay_id, sign_type="HMAC-SHA256"))
    assert status == 200


@pytest.mark.gen_test
async def test_pay_bad_paysign_explained(http_client, base, app):
    prepay_id, _ = await new_order(http_client, base)
    params = pay_params(prepay_id)
    lower = {"appid": DEMO_APPID, "timeStamp": params["timeStamp"], "nonceStr": "abc123",
             "package": params["package"], "signType": "MD5"}
    params["paySign"] = ext_sign(lower)        # `appid` instead of `appId`
    status, data = await pay(http_client, base, params)
    assert status == 400 and "支付验证签名失败" in data["errMsg"]
    entry = app.sim_state.requests[-1]
    assert entry["signature"] == "bad" and entry["api"] == "wx.requestPayment"
    assert "appId is written appid" in entry["explanation"]["hints"][0]
    assert entry["explanation"]["string_to_sign"].startswith("appId=%s&nonceStr=" % DEMO_APPID)
    params = pay_params(prepay_id, key=DEMO_SECRET)
    status, _ = await pay(http_client, base, params)
    assert status == 400
    assert any("AppSecret" in h for h in app.sim_state.requests[-1]["explanation"]["hints"])


@pytest.mark.gen_test
async def test_pay_parameter_types_and_prepay_checks(http_client, base):
    prepay_id, _ = await new_order(http_client, base)
    params = pay_params(prepay_id)
    status, data = await pay(http_client, base, dict(params, timeStamp=int(params["timeStamp"])))
    assert status == 400
    assert data["errMsg"] == ("requestPayment:fail parameter error: parameter.timeStamp "
                              "should be String instead of Number;")
    status, data = await pay(http_client, base, {k: v for k, v in params.items()
                                                 if k != "paySign"})
    assert status == 400 and "paySign should be String instead of Undefined" in data["errMsg"]
    status, data = await pay(http_client, base, pay_params("wx" + "0" * 34))
    assert status == 400 and "prepay_id invalid" in data["errMsg"]
    status, data = await pay(http_client, base, dict(params, result="MAYBE"))
    assert status == 400


@pytest.mark.gen_test
async def test_pay_refused_after_time_expire(http_client, base, app):
    from simulator.models import beijing
    soon = beijing(time.time() + 5)     # before the prepay_id's 7.2 scaled seconds end
    prepay_id, _ = await new_order(http_client, base, "TE1", time_expire=soon)
    app.sim_state.clock.advance(6)
    status, data = await pay(http_client, base, pay_params(prepay_id))
    assert status == 400 and "time_expire" in data["errMsg"]


@pytest.mark.gen_test
async def test_pay_cancel_fail_paid_closed(http_client, base):
    prepay_id, _ = await new_order(http_client, base, "R1")
    status, data = await pay(http_client, base, dict(pay_params(prepay_id), result="CANCEL"))
    assert status == 400 and data["errMsg"] == "requestPayment:fail cancel"
    assert (await call(http_client, base + "/sim/orders/R1"))[1]["trade_state"] == "NOTPAY"
    status, _ = await pay(http_client, base, pay_params(prepay_id))
    assert status == 200
    status, data = await pay(http_client, base, pay_params(prepay_id))
    assert status == 409 and "已支付" in data["errMsg"]
    prepay_id, _ = await new_order(http_client, base, "R2")
    await post_xml(http_client, base + "/pay/closeorder",
                   {"appid": DEMO_APPID, "mch_id": "10000100", "nonce_str": "c",
                    "out_trade_no": "R2"})
    status, data = await pay(http_client, base, pay_params(prepay_id))
    assert status == 409 and "已关闭" in data["errMsg"]


# --- orders --------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_orders_listing_and_lookup(http_client, base):
    await new_order(http_client, base, "L1", attach="x")
    await new_order(http_client, base, "L2")
    status, data = await call(http_client, base + "/sim/orders")
    assert status == 200
    assert sorted(o["out_trade_no"] for o in data["orders"]) == ["L1", "L2"]
    status, order = await call(http_client, base + "/sim/orders/L1")
    assert (order["attach"], order["total_fee"], order["sign_type"]) == ("x", 100, "MD5")
    assert order["refunds"] == [] and order["trade_state"] == "NOTPAY"
    status, data = await call(http_client, base + "/sim/orders/NOPE")
    assert status == 404 and data["error"]["code"] == "ORDER_NOT_FOUND"


# --- faults --------------------------------------------------------------------------

async def add_fault(http_client, base, **rule):
    status, data = await call(http_client, base + "/sim/faults", "POST", rule)
    assert status == 201, data
    return data["id"]


async def query(http_client, base, out_trade_no="NOPE"):
    return await post_xml(http_client, base + "/pay/orderquery",
                          {"appid": DEMO_APPID, "mch_id": "10000100", "nonce_str": "q",
                           "out_trade_no": out_trade_no})


@pytest.mark.gen_test
async def test_fault_latency_is_async(http_client, base):
    await add_fault(http_client, base, path="/pay/orderquery", kind="latency", value=300)
    started = time.monotonic()
    slow = http_client.fetch(HTTPRequest(base + "/pay/orderquery", method="POST",
                                         body=signed_xml({"appid": DEMO_APPID})),
                             raise_error=False)
    status, _ = await call(http_client, base + "/sim/config")      # not blocked meanwhile
    assert status == 200 and not slow.done()
    await slow
    assert time.monotonic() - started >= 0.3                        # the latency was injected


@pytest.mark.gen_test
async def test_fault_status_and_count(http_client, base):
    await add_fault(http_client, base, path="/pay/orderquery", kind="status", value=503, count=2)
    for _ in range(2):
        resp, _ = await query(http_client, base)
        assert resp.code == 503
    resp, data = await query(http_client, base)
    assert resp.code == 200 and data["err_code"] == "ORDERNOTEXIST"
    assert (await call(http_client, base + "/sim/faults"))[1]["faults"] == []


@pytest.mark.gen_test
async def test_fault_system_error_pay_and_login(http_client, base):
    await add_fault(http_client, base, path="/pay/orderquery", kind="system_error")
    _, data = await query(http_client, base)
    assert (data["result_code"], data["err_code"]) == ("FAIL", "SYSTEMERROR")
    assert data["sign"] == ext_sign(data)
    await add_fault(http_client, base, path="/sns/jscode2session", kind="system_error")
    code, _ = await login(http_client, base)
    resp = await http_client.fetch("%s/sns/jscode2session?appid=%s&secret=%s&js_code=%s"
                                   % (base, DEMO_APPID, DEMO_SECRET, code))
    assert json.loads(resp.body)["errcode"] == -1


@pytest.mark.gen_test
async def test_fault_malformed_answers(http_client, base):
    await add_fault(http_client, base, path="/pay/orderquery", kind="malformed")
    resp, data = await query(http_client, base)
    assert resp.code == 200 and data is None and resp.body.startswith(b"<xml>")
    await add_fault(http_client, base, path="/cgi-bin/token", kind="malformed")
    resp = await http_client.fetch(base + "/cgi-bin/token?grant_type=client_credential")
    with pytest.raises(ValueError):
        json.loads(resp.body)


@pytest.mark.gen_test
async def test_fault_bad_sign_on_answer(http_client, base):
    await add_fault(http_client, base, path="/pay/orderquery", kind="bad_sign", count=1)
    _, data = await query(http_client, base)
    assert data["err_code"] == "ORDERNOTEXIST" and data["sign"] != ext_sign(data)
    _, data = await query(http_client, base)
    assert data["sign"] == ext_sign(data)


@pytest.mark.gen_test
async def test_fault_drop_closes_connection(http_client, base, app):
    await add_fault(http_client, base, path="/sandboxnew/pay/orderquery/", kind="drop")
    with pytest.raises(HTTPStreamClosedError):     # no HTTP answer at all
        await query(http_client, base)
    assert app.sim_state.requests[-1]["error"] == "dropped"


@pytest.mark.gen_test
async def test_fault_probability_zero_never_fires_and_delete(http_client, base):
    fault_id = await add_fault(http_client, base, path="/pay/orderquery", kind="status",
                               value=500, probability=0)
    for _ in range(5):
        resp, _ = await query(http_client, base)
        assert resp.code == 200
    status, data = await call(http_client, base + "/sim/faults/" + fault_id, "DELETE")
    assert status == 200 and data == {"deleted": 1}
    await add_fault(http_client, base, path="/pay/orderquery", kind="status", value=500)
    status, data = await call(http_client, base + "/sim/faults", "DELETE")
    assert data == {"deleted": 1}
    resp, _ = await query(http_client, base)
    assert resp.code == 200


def fired_pattern(state, path="/pay/orderquery", requests=64):
    """Which of `requests` calls to path a probability-0.5 rule fires on."""
    state.add_fault(path, "system_error", probability=0.5)
    return [bool(state.fire_faults(path)) for _ in range(requests)]


def test_same_seed_same_faults():
    first = fired_pattern(State(SimConfig.demo(), seed=7))
    assert fired_pattern(State(SimConfig.demo(), seed=7)) == first
    assert 0 < sum(first) < len(first)      # a real coin, not always or never
    assert fired_pattern(State(SimConfig.demo(), seed=8)) != first


@pytest.mark.gen_test
async def test_seeded_faults_replay_after_reset(http_client, base, app):
    app.sim_state.seed = 11
    outcomes = []
    for _ in range(2):
        await call(http_client, base + "/sim/reset", "POST")      # seeds the draws again
        await add_fault(http_client, base, path="/pay/orderquery", kind="system_error",
                        probability=0.5)
        codes = [(await query(http_client, base))[1]["err_code"] for _ in range(16)]
        outcomes.append(codes)
    assert outcomes[0] == outcomes[1]
    assert {"SYSTEMERROR", "ORDERNOTEXIST"} == set(outcomes[0])


@pytest.mark.gen_test
@pytest.mark.parametrize("rule", [
    {"path": "/pay/nothing", "kind": "drop"},
    {"path": "/pay/orderquery", "kind": "explode"},
    {"path": "/pay/orderquery", "kind": "latency"},
    {"path": "/pay/orderquery", "kind": "status", "value": 42},
    {"path": "/pay/orderquery", "kind": "drop", "probability": 2},
    {"path": "/pay/orderquery", "kind": "drop", "count": 0},
    {"path": "/pay/orderquery", "kind": "drop", "count": True},
])
async def test_fault_bad_input_is_json_400(http_client, base, rule):
    status, data = await call(http_client, base + "/sim/faults", "POST", rule)
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"


# --- clock, reset, config, request log, errors ------------------------------------------

@pytest.mark.gen_test
async def test_clock(http_client, base):
    status, before = await call(http_client, base + "/sim/clock")
    status, after = await call(http_client, base + "/sim/clock", "POST", {"advance": 3600})
    assert status == 200 and after["now"] - before["now"] >= 3600
    for bad in ({}, {"advance": "1"}, {"advance": -5}, {"advance": None}):
        status, data = await call(http_client, base + "/sim/clock", "POST", bad)
        assert status == 400, bad


@pytest.mark.gen_test
async def test_reset_forgets_everything(http_client, base, app):
    code, _ = await login(http_client, base)
    await new_order(http_client, base, "Z1")
    await add_fault(http_client, base, path="/pay/orderquery", kind="latency", value=1)
    await call(http_client, base + "/sim/clock", "POST", {"advance": 10})
    status, data = await call(http_client, base + "/sim/reset", "POST")
    assert status == 200
    st = app.sim_state
    assert not st.orders and not st.codes and not st.faults and not st.requests
    assert st.clock.offset == 0 and not st.openids
    resp = await http_client.fetch("%s/sns/jscode2session?appid=%s&secret=%s&js_code=%s"
                                   % (base, DEMO_APPID, DEMO_SECRET, code))
    assert json.loads(resp.body)["errcode"] == 40029


@pytest.mark.gen_test
async def test_config_has_no_secrets(http_client, base):
    resp = await http_client.fetch(base + "/sim/config")
    data = json.loads(resp.body)
    assert data["apps"] == [{"appid": DEMO_APPID}]
    assert data["merchants"] == [{"mch_id": "10000100", "appids": [DEMO_APPID]}]
    assert DEMO_API_KEY.encode() not in resp.body and DEMO_SECRET.encode() not in resp.body


def test_demo_credentials_are_read_from_demo_json():
    with open(sim_config.DEMO_FILE, encoding="utf-8") as f:
        demo = json.load(f)
    assert sorted(demo) == ["api_key", "apiv3_key", "app_secret", "appid", "mch_id",
                            "wechatpay_public_key_id"]
    assert sim_config.DEMO_APIV3_KEY == demo["apiv3_key"] and len(demo["apiv3_key"]) == 32
    assert sim_config.DEMO_PUBLIC_KEY_ID == demo["wechatpay_public_key_id"]
    config = SimConfig.demo()
    assert config.apps[demo["appid"]].secret == demo["app_secret"]
    assert config.merchants[demo["mch_id"]].api_key == demo["api_key"]
    assert demo == DEMO         # the tests' copy has not drifted


@pytest.mark.gen_test
async def test_request_log_shape_and_limit(http_client, base):
    _, openid = await login(http_client, base)
    await post_xml(http_client, base + "/pay/unifiedorder", order_fields(openid))
    await post_xml(http_client, base + "/pay/orderquery", b"<xml>")
    status, data = await call(http_client, base + "/sim/requests?limit=2")
    first, second = data["requests"]
    assert set(first) >= {"time", "method", "path", "signature", "error"}
    assert (first["signature"], first["error"]) == ("ok", None)
    assert (second["signature"], second["error"]) == (None, "XML格式错误")
    assert first["verdict"] == "signature ok"
    assert second["verdict"].startswith("error XML格式错误 (not well-formed XML")
    status, _ = await call(http_client, base + "/sim/requests?limit=x")
    assert status == 400


@pytest.fixture
def small_log(monkeypatch):
    monkeypatch.setattr(sim_state, "REQUEST_LOG_SIZE", 5)


@pytest.mark.gen_test
async def test_request_log_is_bounded(small_log, http_client, base, app):
    app.sim_state.reset()
    for n in range(8):
        await query(http_client, base, "B%d" % n)
    status, data = await call(http_client, base + "/sim/requests")
    assert len(data["requests"]) == 5
    assert sim_state.State(SimConfig.demo()).requests.maxlen == 5


def test_default_request_log_bound():
    assert State(SimConfig.demo()).requests.maxlen == 1000


@pytest.mark.gen_test
async def test_control_plane_errors_are_json(http_client, base):
    resp = await http_client.fetch(HTTPRequest(base + "/sim/login", method="POST", body="{oops"),
                                   raise_error=False)
    assert resp.code == 400 and json.loads(resp.body)["error"]["code"] == "BAD_JSON"
    resp = await http_client.fetch(HTTPRequest(base + "/sim/login", method="POST", body="[1]"),
                                   raise_error=False)
    assert resp.code == 400
    resp = await http_client.fetch(base + "/sim/reset", raise_error=False)     # GET
    assert resp.code == 405 and json.loads(resp.body)["error"]["code"] == "HTTP_405"
    resp = await http_client.fetch(base + "/sim/nothing", raise_error=False)
    assert resp.code == 404 and json.loads(resp.body)["error"]["code"] == "NOT_FOUND"
