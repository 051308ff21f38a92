"""Pay v2 endpoints of the simulator, in process: unifiedorder, orderquery, closeorder, sandbox."""
import re

import pytest

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.sim import (stop_simulator, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, DEMO_SECRET, call,
                               ext_sign, login, new_order, order_fields, pay_params,
                               post_xml, signed_xml)

APP2, SECRET2, MCH2, KEY2 = "wx2222222222222222", "s" * 32, "20000200", "B" * 32
PREPAY = re.compile(r"^wx[0-9]{14}[0-9a-z]{20}$")


def two_merchants():
    return SimConfig.from_dict({
        "apps": [{"appid": DEMO_APPID, "secret": DEMO_SECRET}, {"appid": APP2, "secret": SECRET2}],
        "merchants": [{"mch_id": DEMO_MCH_ID, "api_key": DEMO_API_KEY, "appids": [DEMO_APPID]},
                      {"mch_id": MCH2, "api_key": KEY2, "appids": [APP2]}]})


@pytest.fixture
def app(io_loop):
    application = make_app(State(two_merchants(), time_scale=0.001), notify_timeout=2.0)
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def assert_signed(data, sign_type="MD5", key=DEMO_API_KEY):
    assert data["sign"] == ext_sign(data, key, sign_type)
    assert data["appid"] and data["mch_id"] and data["nonce_str"]


def assert_protocol_fail(data, return_msg):
    assert data == {"return_code": "FAIL", "return_msg": return_msg}


async def unifiedorder(http_client, base, fields, sign_type="MD5", key=DEMO_API_KEY, **kw):
    return await post_xml(http_client, base + "/pay/unifiedorder",
                          signed_xml(fields, key, sign_type), **kw)


@pytest.mark.gen_test
async def test_unifiedorder_success_is_signed_and_prepay_id_has_wechat_shape(http_client, base):
    _, openid = await login(http_client, base)
    resp, data = await unifiedorder(http_client, base, order_fields(openid))
    assert resp.code == 200
    assert data["return_code"] == data["result_code"] == "SUCCESS"
    assert data["trade_type"] == "JSAPI"
    assert PREPAY.match(data["prepay_id"]) and len(data["prepay_id"]) == 36
    assert_signed(data)


@pytest.mark.gen_test
@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"},
                                     {"Content-Type": "text/plain"}])
async def test_any_content_type_is_accepted(http_client, base, headers):
    _, openid = await login(http_client, base)
    _, data = await unifiedorder(http_client, base, order_fields(openid), headers=headers)
    assert data["result_code"] == "SUCCESS"


@pytest.mark.gen_test
async def test_hmac_sha256_request_gets_hmac_signed_answer(http_client, base):
    _, openid = await login(http_client, base)
    _, data = await unifiedorder(http_client, base, order_fields(openid), "HMAC-SHA256")
    assert data["result_code"] == "SUCCESS"
    assert len(data["sign"]) == 64
    assert_signed(data, "HMAC-SHA256")


@pytest.mark.gen_test
async def test_unknown_fields_are_signed_too(http_client, base):
    _, openid = await login(http_client, base)
    fields = order_fields(openid, foo_extension="bar")
    _, data = await unifiedorder(http_client, base, fields)
    assert data["result_code"] == "SUCCESS"
    body = signed_xml(order_fields(openid, "T2")).replace(b"</xml>", b"<zz>1</zz></xml>")
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", body)
    assert_protocol_fail(data, "签名错误")


@pytest.mark.gen_test
async def test_repeat_same_fields_same_prepay_id_different_fields_refused(http_client, base,
                                                                         app):
    _, openid = await login(http_client, base)
    _, first = await unifiedorder(http_client, base, order_fields(openid, nonce_str="a"))
    _, again = await unifiedorder(http_client, base, order_fields(openid, nonce_str="b"))
    assert again["prepay_id"] == first["prepay_id"]
    _, other = await unifiedorder(http_client, base, order_fields(openid, total_fee="101"))
    assert (other["result_code"], other["err_code"]) == ("FAIL", "INVALID_REQUEST")
    assert other["err_code_des"] == "201 商户订单号重复"
    assert_signed(other)
    app.sim_state.clock.advance(7.2)    # 2 hours at time scale 0.001
    _, renewed = await unifiedorder(http_client, base, order_fields(openid))
    assert renewed["result_code"] == "SUCCESS"
    assert renewed["prepay_id"] != first["prepay_id"]


@pytest.mark.gen_test
async def test_prepay_id_valid_two_scaled_hours(http_client, base, app):
    prepay_id, _ = await new_order(http_client, base)
    app.sim_state.clock.advance(7.1)
    status, _ = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 200
    prepay_id, _ = await new_order(http_client, base, "T2")
    app.sim_state.clock.advance(7.3)
    status, data = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 400 and "expired" in data["errMsg"]


@pytest.mark.gen_test
async def test_paid_and_closed_orders_refuse_unifiedorder(http_client, base):
    prepay_id, openid = await new_order(http_client, base, "PAID1")
    await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    _, data = await unifiedorder(http_client, base, order_fields(openid, "PAID1"))
    assert data["err_code"] == "ORDERPAID"
    await new_order(http_client, base, "CLOSED1")
    await post_xml(http_client, base + "/pay/closeorder", close_fields("CLOSED1"))
    _, data = await unifiedorder(http_client, base, order_fields(openid, "CLOSED1"))
    assert data["err_code"] == "ORDERCLOSED"
    assert_signed(data)


@pytest.mark.gen_test
@pytest.mark.parametrize("missing", ["appid", "mch_id", "nonce_str", "body", "out_trade_no",
                                     "total_fee", "spbill_create_ip", "notify_url",
                                     "trade_type", "openid"])
async def test_missing_parameter(http_client, base, missing):
    _, openid = await login(http_client, base)
    fields = order_fields(openid)
    del fields[missing]
    _, data = await unifiedorder(http_client, base, fields)
    assert_protocol_fail(data, "缺少参数")


@pytest.mark.gen_test
async def test_missing_sign_is_missing_parameter(http_client, base):
    from simulator.v2.wire import to_xml
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", to_xml(order_fields("o")))
    assert_protocol_fail(data, "缺少参数")


@pytest.mark.gen_test
async def test_native_needs_no_openid_and_gets_code_url(http_client, base):
    fields = order_fields(None, trade_type="NATIVE", product_id="P1")
    _, data = await unifiedorder(http_client, base, fields)
    assert data["result_code"] == "SUCCESS"
    assert data["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")


@pytest.mark.gen_test
async def test_openid_must_be_issued_for_that_appid(http_client, base):
    _, data = await unifiedorder(http_client, base, order_fields("o" + "x" * 27))
    assert (data["result_code"], data["err_code"]) == ("FAIL", "PARAM_ERROR")
    assert_signed(data)
    _, other_app_openid = await login(http_client, base, "alice", APP2)
    _, data = await unifiedorder(http_client, base, order_fields(other_app_openid))
    assert data["err_code"] == "PARAM_ERROR"


@pytest.mark.gen_test
async def test_unknown_and_unbound_appid_and_mch_id(http_client, base):
    _, openid = await login(http_client, base)
    _, data = await unifiedorder(http_client, base, order_fields(openid, appid="wxnope"))
    assert data["err_code"] == "APPID_NOT_EXIST"
    assert_signed(data)
    _, data = await unifiedorder(http_client, base, order_fields(openid, appid=APP2))
    assert data["err_code"] == "APPID_MCHID_NOT_MATCH"
    _, data = await unifiedorder(http_client, base, order_fields(openid, mch_id="999"))
    assert (data["result_code"], data["err_code"]) == ("FAIL", "MCHID_NOT_EXIST")
    assert "sign" not in data      # no key exists to sign for an unknown merchant


@pytest.mark.gen_test
@pytest.mark.parametrize("field, value", [
    ("out_trade_no", "x" * 33), ("out_trade_no", "bad no"), ("out_trade_no", "订单"),
    ("total_fee", "0"), ("total_fee", "-1"), ("total_fee", "1.5"), ("total_fee", "abc"),
    ("body", "a" * 128), ("body", "中" * 43), ("trade_type", "H5"), ("time_expire", "2024"),
])
async def test_field_rules_answer_invalid_request(http_client, base, field, value):
    _, openid = await login(http_client, base)
    _, data = await unifiedorder(http_client, base, order_fields(openid, **{field: value}))
    assert (data["result_code"], data["err_code"]) == ("FAIL", "INVALID_REQUEST")
    assert_signed(data)


@pytest.mark.gen_test
async def test_allowed_out_trade_no_charset_and_body_limit(http_client, base):
    _, openid = await login(http_client, base)
    fields = order_fields(openid, "Ab-9_|*" + "x" * 25, body="中" * 42)
    _, data = await unifiedorder(http_client, base, fields)
    assert data["result_code"] == "SUCCESS"


@pytest.mark.gen_test
@pytest.mark.parametrize("url", ["http://shop.example/notify?id=1", "ftp://shop.example/n",
                                 "notify", "http://shop.example/" + "n" * 250,
                                 "http://[::1/notify"])
async def test_invalid_notify_url(http_client, base, url):
    _, openid = await login(http_client, base)
    _, data = await unifiedorder(http_client, base, order_fields(openid, notify_url=url))
    assert_protocol_fail(data, "invalid notify_url")


@pytest.mark.gen_test
async def test_get_is_refused_and_empty_body(http_client, base):
    resp = await http_client.fetch(base + "/pay/unifiedorder", raise_error=False)
    assert resp.code == 200 and "请使用post方法".encode() in resp.body
    _, data = await post_xml(http_client, base + "/pay/orderquery", b"  ")
    assert_protocol_fail(data, "post数据为空")


@pytest.mark.gen_test
async def test_malformed_and_non_utf8_bodies(http_client, base):
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", b"<xml><appid>wx")
    assert_protocol_fail(data, "XML格式错误")
    gbk = "<xml><body>中文</body></xml>".encode("gbk")
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", gbk)
    assert_protocol_fail(data, "编码格式错误")


@pytest.mark.gen_test
async def test_xxe_refused_without_reading_the_entity(http_client, base, tmp_path, app):
    secret = tmp_path / "passwd"
    secret.write_text("ROOT-PASSWORD-HASH")
    body = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file://%s">]>'
            '<xml><appid>&x;</appid><mch_id>10000100</mch_id></xml>' % secret).encode()
    resp, data = await post_xml(http_client, base + "/pay/unifiedorder", body)
    assert_protocol_fail(data, "XML格式错误")
    assert b"ROOT-PASSWORD-HASH" not in resp.body
    entry = app.sim_state.requests[-1]
    assert "DOCTYPE" in entry["detail"] and "ROOT-PASSWORD-HASH" not in str(entry)


@pytest.mark.gen_test
async def test_billion_laughs_refused(http_client, base):
    lol = ['<!ENTITY l0 "lol">'] + ['<!ENTITY l%d "%s">' % (i, ("&l%d;" % (i - 1)) * 10)
                                    for i in range(1, 10)]
    body = ('<?xml version="1.0"?><!DOCTYPE xml [%s]><xml><appid>&l9;</appid></xml>'
            % "".join(lol)).encode()
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", body)
    assert_protocol_fail(data, "XML格式错误")


@pytest.mark.gen_test
async def test_body_over_one_mebibyte_refused(http_client, base):
    body = b"<xml><body><![CDATA[" + b"a" * (1 << 20) + b"]]></body></xml>"
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", body)
    assert data["return_code"] == "FAIL" and data["return_msg"] == "请求数据过大"


@pytest.mark.gen_test
async def test_listen_caps_body_size(http_client, app):
    from tests.support.processes import free_port
    port = free_port()
    server = app.listen(port, "127.0.0.1")
    try:
        body = b"<xml><body>" + b"a" * (2 << 20) + b"</body></xml>"
        resp, _ = await post_xml(http_client, "http://127.0.0.1:%d/pay/orderquery" % port, body)
        assert resp.code == 400     # refused from Content-Length, before the body is read
    finally:
        server.stop()
    assert all(e["api"] != "/pay/orderquery" for e in app.sim_state.requests)


@pytest.mark.gen_test
async def test_bad_signature_answer_is_wechat_exact_and_log_explains(http_client, base, app):
    _, openid = await login(http_client, base)
    fields = order_fields(openid, attach="")
    body = signed_xml(fields, DEMO_SECRET)      # the AppSecret: the classic mistake
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", body)
    assert_protocol_fail(data, "签名错误")
    status, log = await call(http_client, base + "/sim/requests")
    entry = log["requests"][-1]
    assert entry["signature"] == "bad" and entry["error"] == "签名错误"
    assert entry["verdict"].startswith("signature bad error 签名错误")
    explanation = entry["explanation"]
    assert explanation["string_to_sign"].endswith("&key=" + "*" * 32)
    assert DEMO_API_KEY not in str(log)
    hints = " | ".join(explanation["hints"])
    assert "AppSecret of %s" % DEMO_APPID in hints
    assert "empty values are not signed (attach)" in hints


@pytest.mark.gen_test
async def test_md5_sign_where_hmac_declared_is_explained(http_client, base, app):
    _, openid = await login(http_client, base)
    fields = order_fields(openid, sign_type="HMAC-SHA256")
    fields["sign"] = ext_sign(fields, DEMO_API_KEY, "MD5")
    from simulator.v2.wire import to_xml
    _, data = await post_xml(http_client, base + "/pay/unifiedorder", to_xml(fields))
    assert_protocol_fail(data, "签名错误")
    hints = app.sim_state.requests[-1]["explanation"]["hints"]
    assert any("32 characters (an MD5 sign)" in h for h in hints)


@pytest.mark.gen_test
async def test_good_signature_logged_ok(http_client, base, app):
    await new_order(http_client, base)
    entry = app.sim_state.requests[-1]
    assert entry["api"] == "/pay/unifiedorder" and entry["signature"] == "ok"
    assert entry["error"] is None


@pytest.mark.gen_test
async def test_negative_test_header_fails_that_call_only(http_client, base, app):
    _, openid = await login(http_client, base)
    headers = {"Wechatpay-Negative-Test": "SYSTEMERROR"}
    _, data = await unifiedorder(http_client, base, order_fields(openid), headers=headers)
    assert (data["result_code"], data["err_code"]) == ("FAIL", "SYSTEMERROR")
    assert_signed(data)
    assert not app.sim_state.orders
    headers = {"Wechatpay-Negative-Test": "NOTENOUGH"}
    _, data = await unifiedorder(http_client, base, order_fields(openid), headers=headers)
    assert data["err_code"] == "NOTENOUGH" and data["err_code_des"] == "余额不足"
    _, data = await unifiedorder(http_client, base, order_fields(openid))
    assert data["result_code"] == "SUCCESS"


def query_fields(**ids):
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "q1"}
    fields.update(ids)
    return fields


def close_fields(out_trade_no):
    return query_fields(out_trade_no=out_trade_no)


async def query(http_client, base, prefix="", key=DEMO_API_KEY, **ids):
    _, data = await post_xml(http_client, base + prefix + "/pay/orderquery",
                             signed_xml(query_fields(**ids), key))
    return data


@pytest.mark.gen_test
async def test_orderquery_every_state(http_client, base):
    prepay_id, openid = await new_order(http_client, base, "Q1", attach="a1")
    data = await query(http_client, base, out_trade_no="Q1")
    assert (data["trade_state"], data["trade_state_desc"]) == ("NOTPAY", "订单未支付")
    assert data["attach"] == "a1" and "transaction_id" not in data
    assert_signed(data)
    await call(http_client, base + "/sim/pay", "POST", dict(pay_params(prepay_id),
                                                            result="USERPAYING"))
    assert (await query(http_client, base, out_trade_no="Q1"))["trade_state"] == "USERPAYING"
    status, paid = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    data = await query(http_client, base, transaction_id=paid["transaction_id"])
    assert data["trade_state"] == "SUCCESS" and data["out_trade_no"] == "Q1"
    assert (data["openid"], data["total_fee"], data["cash_fee"]) == (openid, "100", "100")
    assert re.match(r"^4200[0-9]{24}$", data["transaction_id"])
    assert re.match(r"^20[0-9]{12}$", data["time_end"])
    prepay_id, _ = await new_order(http_client, base, "Q2")
    await call(http_client, base + "/sim/pay", "POST", dict(pay_params(prepay_id), result="FAIL"))
    assert (await query(http_client, base, out_trade_no="Q2"))["trade_state"] == "PAYERROR"
    await post_xml(http_client, base + "/pay/closeorder", close_fields("Q2"))
    assert (await query(http_client, base, out_trade_no="Q2"))["trade_state"] == "CLOSED"


@pytest.mark.gen_test
async def test_orderquery_unknown_and_missing_ids(http_client, base):
    data = await query(http_client, base, out_trade_no="NOPE")
    assert (data["result_code"], data["err_code"]) == ("FAIL", "ORDERNOTEXIST")
    assert_signed(data)
    data = await query(http_client, base, transaction_id="4200000000000000000000000000")
    assert data["err_code"] == "ORDERNOTEXIST"
    assert_protocol_fail(await query(http_client, base), "缺少参数")


@pytest.mark.gen_test
async def test_closeorder_rules(http_client, base):
    await new_order(http_client, base, "C1")
    _, data = await post_xml(http_client, base + "/pay/closeorder", close_fields("C1"))
    assert data["result_code"] == "SUCCESS"
    assert_signed(data)
    _, data = await post_xml(http_client, base + "/pay/closeorder", close_fields("C1"))
    assert data["err_code"] == "ORDERCLOSED"
    prepay_id, _ = await new_order(http_client, base, "C2")
    await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    _, data = await post_xml(http_client, base + "/pay/closeorder", close_fields("C2"))
    assert data["err_code"] == "ORDERPAID"
    _, data = await post_xml(http_client, base + "/pay/closeorder", close_fields("C3"))
    assert data["err_code"] == "ORDERNOTEXIST"


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/pay/orderquery/", "/sandboxnew/pay/orderquery",
                                  "/xdc/apiv2sandbox/pay/orderquery/"])
async def test_paths_with_slash_and_sandbox_prefixes(http_client, base, path, app):
    key = app.sim_state.config.merchants[DEMO_MCH_ID].key("sandbox" in path)
    _, data = await post_xml(http_client, base + path,
                             signed_xml(query_fields(out_trade_no="X"), key))
    assert data["err_code"] == "ORDERNOTEXIST"
    assert_signed(data, key=key)


def getsignkey_body(key=DEMO_API_KEY):
    return signed_xml({"mch_id": DEMO_MCH_ID, "nonce_str": "s1"}, key)


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/sandboxnew/pay/getsignkey",
                                  "/xdc/apiv2getsignkey/sign/getsignkey/"])
async def test_getsignkey_with_real_key(http_client, base, path):
    _, data = await post_xml(http_client, base + path, getsignkey_body())
    assert data["return_code"] == "SUCCESS" and data["mch_id"] == DEMO_MCH_ID
    assert len(data["sandbox_signkey"]) == 32 and data["sandbox_signkey"] != DEMO_API_KEY
    _, data = await post_xml(http_client, base + path, getsignkey_body("x" * 32))
    assert_protocol_fail(data, "签名错误")


@pytest.mark.gen_test
async def test_sandbox_api_signed_with_sandbox_key(http_client, base, app):
    _, keydata = await post_xml(http_client, base + "/sandboxnew/pay/getsignkey",
                                getsignkey_body())
    sandbox_key = keydata["sandbox_signkey"]
    prepay_id, openid = await new_order(http_client, base, "S1", prefix="/sandboxnew",
                                        key=sandbox_key)
    data = await query(http_client, base, "/xdc/apiv2sandbox", sandbox_key, out_trade_no="S1")
    assert data["trade_state"] == "NOTPAY"
    assert_signed(data, key=sandbox_key)
    _, data = await post_xml(http_client, base + "/sandboxnew/pay/unifiedorder",
                             signed_xml(order_fields(openid, "S2"), DEMO_API_KEY))
    assert_protocol_fail(data, "签名错误")
    hints = " ".join(app.sim_state.requests[-1]["explanation"]["hints"])
    assert "the real API key" in hints
    status, _ = await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 400        # the sandbox order's paySign needs the sandbox key
    status, _ = await call(http_client, base + "/sim/pay", "POST",
                           pay_params(prepay_id, sandbox_key))
    assert status == 200


@pytest.mark.gen_test
async def test_second_merchant_uses_its_own_key(http_client, base):
    _, openid = await login(http_client, base, "bob", APP2)
    fields = order_fields(openid, "M2", appid=APP2, mch_id=MCH2)
    _, data = await unifiedorder(http_client, base, fields, key=KEY2)
    assert data["result_code"] == "SUCCESS"
    assert_signed(data, key=KEY2)
    _, data = await unifiedorder(http_client, base, order_fields(openid, "M3", appid=APP2,
                                                                  mch_id=MCH2))
    assert_protocol_fail(data, "签名错误")
