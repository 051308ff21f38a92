"""The simulator's API v3 Native, App and H5 payments, in process: created, queried, closed,
refunded and notified as JSAPI is; paid on the phone by code_url (a scan), h5_url, or the App
call whose RSA sign is checked (and explained in /sim/requests); the console's phone pays them."""
import json
import re
import time

import pytest
from wechatpayv3.utils import rsa_sign

from simulator import payurls
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from simulator.v3 import keys as v3keys
from tests.support.sim import call, login, stop_simulator, wait_for
from tests.support.sim3 import (APIV3_KEY, APPID, MCHID, V3Receiver, decrypt_notification,
                                v3_call)

TIME_SCALE = 0.01           # prepay_id TTL 72 s, h5_url 3 s, refunds 0.05 s
KINDS = {"NATIVE": "/v3/pay/transactions/native", "APP": "/v3/pay/transactions/app",
         "MWEB": "/v3/pay/transactions/h5"}
SCENE = {"payer_client_ip": "203.0.113.7", "h5_info": {"type": "Wap"}}
CODE_URL = re.compile(r"^weixin://wxpay/bizpayurl\?pr=\S+$")
H5_URL = re.compile(r"^https://wx\.tenpay\.com/cgi-bin/mmpayweb-bin/checkmweb\?prepay_id="
                    r"wx[0-9]{14}[0-9a-f]{20}&package=[0-9]+$")


@pytest.fixture
def box():
    return {}


@pytest.fixture
def app(io_loop, v3_dir, v3_merchant, box):
    setup = v3keys.prepare(v3_dir, MCHID, APPID, APIV3_KEY, "public-key",
                           merchant_cert=v3_merchant.cert_file)
    state = State(SimConfig.demo(), time_scale=TIME_SCALE, v3=setup)
    application = make_app(state, notify_timeout=1.0)
    application.add_handlers(r".*", [(r"/v3-notify", V3Receiver, {"box": box})])
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def kind_body(kind, out_trade_no, base, **overrides):
    """A Native, App or H5 order (no payer: the payer is whoever scans or opens it)."""
    body = {"appid": APPID, "mchid": MCHID, "description": "Coffee",
            "out_trade_no": out_trade_no, "notify_url": base + "/v3-notify",
            "amount": {"total": 100, "currency": "CNY"}}
    if kind == "MWEB":
        body["scene_info"] = SCENE
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def create(http_client, base, merchant, kind, out_trade_no, **overrides):
    """The create answer of one order of this kind."""
    status, _, text = await v3_call(http_client, base, merchant, "POST", KINDS[kind],
                                    kind_body(kind, out_trade_no, base, **overrides))
    assert status == 200, text
    return json.loads(text)


def app_call(merchant, prepay_id, key=None, sign_str=None, **overrides):
    """What an App hands the WeChat SDK (APP调起支付), signed by the SDK's rsa_sign over
    appid\\ntimestamp\\nnoncestr\\nprepayid\\n."""
    fields = {"appid": APPID, "partnerid": MCHID, "prepayid": prepay_id, "package": "Sign=WXPay",
              "noncestr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", "timestamp": str(int(time.time()))}
    text = sign_str or "%s\n%s\n%s\n%s\n" % (APPID, fields["timestamp"], fields["noncestr"],
                                              prepay_id)
    fields["sign"] = rsa_sign(key or merchant.key, text)
    fields.update(overrides)
    return fields


def phone_fields(merchant, kind, created):
    """POST /sim/pay's fields for an order of this kind, from its create answer."""
    if kind == "NATIVE":
        return {"code_url": created["code_url"], "user": "bob"}
    if kind == "MWEB":
        return {"h5_url": created["h5_url"], "user": "bob"}
    return dict(app_call(merchant, created["prepay_id"]), user="bob")


async def query(http_client, base, merchant, out_trade_no):
    url = "/v3/pay/transactions/out-trade-no/%s?mchid=%s" % (out_trade_no, MCHID)
    status, _, text = await v3_call(http_client, base, merchant, "GET", url)
    assert status == 200, text
    return json.loads(text)


async def last_request(http_client, base):
    return (await call(http_client, base + "/sim/requests?limit=1"))[1]["requests"][0]


def error_of(status, text):
    return status, json.loads(text)["code"]


# --- the life of each kind ---------------------------------------------------------------
@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("kind", ["NATIVE", "APP", "MWEB"])
async def test_create_pay_on_the_phone_query_notify_refund(http_client, base, v3_merchant, box,
                                                           kind):
    no = "KIND" + kind
    created = await create(http_client, base, v3_merchant, kind, no, attach="cart")
    answer_field = {"NATIVE": "code_url", "APP": "prepay_id", "MWEB": "h5_url"}[kind]
    assert list(created) == [answer_field]
    assert {"NATIVE": CODE_URL, "APP": re.compile(r"^wx[0-9]{14}[0-9a-f]{20}$"),
            "MWEB": H5_URL}[kind].match(created[answer_field]), created
    unpaid = await query(http_client, base, v3_merchant, no)
    assert (unpaid["trade_type"], unpaid["trade_state"], unpaid["payer"]) == (kind, "NOTPAY", {})

    status, data = await call(http_client, base + "/sim/pay", "POST",
                              phone_fields(v3_merchant, kind, created))
    assert status == 200 and data["out_trade_no"] == no, data
    assert data["trade_type"] == kind           # as a v2 order's answer names it
    _, bob = await login(http_client, base, "bob")
    tx = await query(http_client, base, v3_merchant, no)
    assert (tx["trade_type"], tx["trade_state"], tx["transaction_id"]) == (
        kind, "SUCCESS", data["transaction_id"])
    assert tx["payer"] == {"openid": bob} and tx["attach"] == "cart"
    assert await wait_for(lambda: box.get("received"), timeout=5)
    note = decrypt_notification(box["received"][0][1])
    assert (note["trade_type"], note["trade_state"], note["out_trade_no"]) == (kind, "SUCCESS", no)

    status, again = await call(http_client, base + "/sim/pay", "POST",
                               phone_fields(v3_merchant, kind, created))
    assert status == 409 and "已支付" in again["errMsg"]          # paid twice
    refund = {"out_trade_no": no, "out_refund_no": "R" + no,
              "amount": {"refund": 40, "total": 100, "currency": "CNY"}}
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST",
                                    "/v3/refund/domestic/refunds", refund)
    assert status == 200 and json.loads(text)["status"] == "PROCESSING", text
    assert (await query(http_client, base, v3_merchant, no))["trade_state"] == "REFUND"


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("kind", ["NATIVE", "APP", "MWEB"])
async def test_repeat_close_and_the_console_phone(http_client, base, v3_merchant, kind):
    created = await create(http_client, base, v3_merchant, kind, "REPEAT" + kind)
    assert await create(http_client, base, v3_merchant, kind, "REPEAT" + kind) == created
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS[kind],
                                    kind_body(kind, "REPEAT" + kind, base, description="Tea"))
    assert error_of(status, text) == (403, "OUT_TRADE_NO_USED")
    assert "description" in (await last_request(http_client, base))["detail"]
    other = {"NATIVE": "APP", "APP": "NATIVE", "MWEB": "NATIVE"}[kind]
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS[other],
                                    kind_body(kind, "REPEAT" + kind, base))
    assert error_of(status, text) == (403, "OUT_TRADE_NO_USED")      # another kind, same no
    assert kind in (await last_request(http_client, base))["detail"]

    close = "/v3/pay/transactions/out-trade-no/REPEAT%s/close" % kind
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", close,
                                    {"mchid": MCHID})
    assert (status, text) == (204, "")
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              phone_fields(v3_merchant, kind, created))
    assert status == 409 and "已关闭" in data["errMsg"]

    await create(http_client, base, v3_merchant, kind, "CONSOLE" + kind)
    status, data = await call(http_client, base + "/sim/orders/CONSOLE%s/phone" % kind, "POST",
                              {"result": "SUCCESS"})
    assert status == 200 and data["trade_state"] == "SUCCESS", data
    tx = await query(http_client, base, v3_merchant, "CONSOLE" + kind)
    assert (tx["trade_type"], tx["trade_state"]) == (kind, "SUCCESS")


# --- field errors ------------------------------------------------------------------------
@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("kind, change", [
    ("MWEB", {"scene_info": None}),
    ("MWEB", {"scene_info": {"h5_info": {"type": "Wap"}}}),
    ("MWEB", {"scene_info": {"payer_client_ip": "203.0.113.7"}}),
    ("MWEB", {"scene_info": {"payer_client_ip": "203.0.113.7", "h5_info": {}}}),
    ("MWEB", {"scene_info": {"payer_client_ip": "203.0.113.7", "h5_info": {"type": "Web"}}}),
    ("MWEB", {"scene_info": "Wap"}),
    ("NATIVE", {"description": None}),
    ("APP", {"amount": {"total": 0}}),
    ("NATIVE", {"notify_url": "ftp://shop.example.com/notify"}),
    ("APP", {"notify_url": "http://[::1/notify"}),
])
async def test_field_errors(http_client, base, v3_merchant, kind, change):
    body = kind_body(kind, "FIELDS" + kind, base, **change)
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS[kind], body)
    assert error_of(status, text) == (400, "PARAM_ERROR")
    entry = await last_request(http_client, base)
    assert entry["api"] == KINDS[kind] and entry["error"] == "PARAM_ERROR" and entry["detail"]


@pytest.mark.gen_test(timeout=15)
async def test_h5_without_h5_info_names_the_field_as_wechat_does(http_client, base, v3_merchant):
    body = kind_body("MWEB", "NOH5INFO1", base, scene_info={"payer_client_ip": "203.0.113.7"})
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS["MWEB"], body)
    assert (status, json.loads(text)["message"]) == (
        400, "输入源“/body/scene_info/h5_info”映射到字段“h5_info”必填性规则校验失败，此字段为必填项")


@pytest.mark.gen_test(timeout=15)
async def test_an_expired_h5_url_is_refused_as_the_checkmweb_page_does(http_client, base,
                                                                       v3_merchant, app):
    h5 = await create(http_client, base, v3_merchant, "MWEB", "H5GONE001")
    app.sim_state.clock.advance(301 * TIME_SCALE)               # 5 minutes and 1 second
    status, data = await call(http_client, base + "/sim/pay", "POST", {"h5_url": h5["h5_url"]})
    assert status == 400 and "支付请求已失效，请重新发起支付" in data["errMsg"], data


@pytest.mark.gen_test(timeout=15)
async def test_wrong_appid_and_a_fault_on_the_new_paths(http_client, base, v3_merchant):
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS["APP"],
                                    kind_body("APP", "APPID0001", base, appid="wx0000000000000000"))
    assert error_of(status, text) == (400, "APPID_MCHID_NOT_MATCH")
    status, _ = await call(http_client, base + "/sim/faults", "POST",
                           {"path": KINDS["NATIVE"], "kind": "system_error", "count": 1})
    assert status in (200, 201)
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", KINDS["NATIVE"],
                                    kind_body("NATIVE", "FAULT0001", base))
    assert error_of(status, text) == (500, "SYSTEM_ERROR")


# --- the phone's errors ------------------------------------------------------------------
@pytest.mark.gen_test(timeout=15)
async def test_expired_code_url_and_h5_url(http_client, base, v3_merchant, app):
    native = await create(http_client, base, v3_merchant, "NATIVE", "EXPIRE001")
    h5 = await create(http_client, base, v3_merchant, "MWEB", "EXPIRE002")
    app.sim_state.clock.advance(301 * TIME_SCALE)               # h5_url lives 5 minutes
    status, data = await call(http_client, base + "/sim/pay", "POST", {"h5_url": h5["h5_url"]})
    assert status == 400 and "expired" in data["errMsg"], data
    renewed = await create(http_client, base, v3_merchant, "MWEB", "EXPIRE002")
    assert renewed != h5 and H5_URL.match(renewed["h5_url"])
    app.sim_state.clock.advance(7200 * TIME_SCALE)              # code_url lives 2 hours
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              {"code_url": native["code_url"]})
    assert status == 400 and "expired" in data["errMsg"], data
    status, data = await call(http_client, base + "/sim/orders/EXPIRE001/phone", "POST", {})
    assert status == 409
    renewed = await create(http_client, base, v3_merchant, "NATIVE", "EXPIRE001")
    assert renewed != native
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              {"code_url": renewed["code_url"]})
    assert status == 200, data


@pytest.mark.gen_test(timeout=15)
async def test_unknown_links_and_an_order_of_another_kind(http_client, base, v3_merchant):
    for fields in ({"code_url": "weixin://wxpay/bizpayurl?pr=nosuchcode"},
                   {"code_url": 7},
                   {"h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id="
                              "wx20260101000000aaaaaaaaaaaaaaaaaaaa&package=1"}):
        status, data = await call(http_client, base + "/sim/pay", "POST", fields)
        assert status == 400 and data["errMsg"].startswith("requestPayment:fail"), data
        assert (await last_request(http_client, base))["error"] == data["errMsg"]
    native = await create(http_client, base, v3_merchant, "NATIVE", "OTHER0001")
    pr = native["code_url"].replace("weixin://wxpay/bizpayurl?pr=", "")
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              app_call(v3_merchant, pr))
    assert status == 400, data
    app_order = await create(http_client, base, v3_merchant, "APP", "OTHER0002")
    status, data = await call(http_client, base + "/sim/pay", "POST", {
        "h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=%s&package=1"
                  % app_order["prepay_id"]})
    assert status == 400 and "H5" in data["errMsg"], data       # an App order's prepay_id


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("mistake, hint", [
    ("hex", "hex characters"),
    ("no_last_newline", "the last \\n is left out"),
    ("package", "Sign=WXPay is signed"),
    ("partnerid", "partnerid is signed"),
    ("other_key", "no common mistake"),
])
async def test_app_sign_failures_are_explained(http_client, base, v3_merchant, mistake, hint):
    from cryptography.hazmat.primitives.asymmetric import rsa
    prepay_id = (await create(http_client, base, v3_merchant, "APP", "APPSIGN01"))["prepay_id"]
    fields = app_call(v3_merchant, prepay_id)
    head = "%s\n%s\n%s\n" % (APPID, fields["timestamp"], fields["noncestr"])
    if mistake == "hex":
        fields["sign"] = "0123456789ABCDEF0123456789ABCDEF"
    elif mistake == "no_last_newline":
        fields = app_call(v3_merchant, prepay_id, sign_str=head + prepay_id,
                          timestamp=fields["timestamp"])
    elif mistake == "package":
        fields = app_call(v3_merchant, prepay_id, sign_str=head + prepay_id + "\nSign=WXPay\n",
                          timestamp=fields["timestamp"])
    elif mistake == "partnerid":
        fields = app_call(v3_merchant, prepay_id, sign_str="%s\n%s\n%s\n%s\n%s\n" % (
            APPID, MCHID, fields["timestamp"], fields["noncestr"], prepay_id),
            timestamp=fields["timestamp"])
    else:
        fields = app_call(v3_merchant, prepay_id, key=rsa.generate_private_key(
            public_exponent=65537, key_size=2048))
    status, data = await call(http_client, base + "/sim/pay", "POST", fields)
    assert (status, data["errMsg"]) == (400, "requestPayment:fail 支付验证签名失败")
    entry = await last_request(http_client, base)
    assert entry["signature"] == "bad" and entry["verdict"].startswith("signature bad")
    explanation = entry["explanation"]
    assert explanation["string_to_sign"] == "%s\n%s\n%s\n%s\n" % (
        APPID, fields["timestamp"], fields["noncestr"], prepay_id)
    assert any(hint in h for h in explanation["hints"]), explanation["hints"]


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("change", [
    {"partnerid": "1900000999"}, {"package": "prepay_id=x"}, {"appid": "wx0000000000000000"},
    {"timestamp": None}, {"sign": 5},
])
async def test_app_call_field_errors(http_client, base, v3_merchant, change):
    prepay_id = (await create(http_client, base, v3_merchant, "APP", "APPFIELD1"))["prepay_id"]
    fields = dict(app_call(v3_merchant, prepay_id), **change)
    fields = {k: v for k, v in fields.items() if v is not None}
    status, data = await call(http_client, base + "/sim/pay", "POST", fields)
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail"), data
    assert (await query(http_client, base, v3_merchant, "APPFIELD1"))["trade_state"] == "NOTPAY"


@pytest.mark.gen_test(timeout=15)
async def test_the_app_call_takes_prepay_id_for_prepayid_as_v2s_does(http_client, base,
                                                                     v3_merchant):
    prepay_id = (await create(http_client, base, v3_merchant, "APP", "ALIAS0001"))["prepay_id"]
    fields = app_call(v3_merchant, prepay_id)
    fields["prepay_id"] = fields.pop("prepayid")
    status, data = await call(http_client, base + "/sim/pay", "POST", fields)
    assert status == 200 and data["out_trade_no"] == "ALIAS0001", data
    assert (await query(http_client, base, v3_merchant, "ALIAS0001"))["trade_state"] == "SUCCESS"


@pytest.mark.gen_test(timeout=15)
async def test_a_v2_shaped_code_url_of_a_v3_order_is_no_link_it_answered(http_client, base,
                                                                        v3_merchant):
    """v2's code_url (pr = 7 characters of the prepay_id) of a v3 Native order: never answered."""
    native = await create(http_client, base, v3_merchant, "NATIVE", "V2SHAPE01")
    v2_shaped = payurls.code_url(native["code_url"].replace("weixin://wxpay/bizpayurl?pr=", ""))
    status, data = await call(http_client, base + "/sim/pay", "POST", {"code_url": v2_shaped})
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail"), data
    assert (await query(http_client, base, v3_merchant, "V2SHAPE01"))["trade_state"] == "NOTPAY"


@pytest.mark.gen_test(timeout=15)
async def test_wx_request_payment_does_not_pay_an_app_order(http_client, base, v3_merchant):
    """JSAPI's fields with an App order's prepay_id, correctly RSA-signed: refused."""
    prepay_id = (await create(http_client, base, v3_merchant, "APP", "CROSS0001"))["prepay_id"]
    params = {"appid": APPID, "timeStamp": str(int(time.time())), "nonceStr": "n0nceN0nce",
              "package": "prepay_id=" + prepay_id, "signType": "RSA"}
    params["paySign"] = rsa_sign(v3_merchant.key, "%s\n%s\n%s\n%s\n" % (
        APPID, params["timeStamp"], params["nonceStr"], params["package"]))
    status, data = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 400 and "App" in data["errMsg"], data
    assert (await query(http_client, base, v3_merchant, "CROSS0001"))["trade_state"] == "NOTPAY"
