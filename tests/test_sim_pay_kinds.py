"""Pay v2's Native, App and H5 (MWEB) payments in process: unifiedorder's answers, the phone
paying them through /sim/pay (scan, App call, H5 page) and the console, then query, close,
refund and notification as for JSAPI."""
import re
import time
import urllib.parse

import pytest

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from simulator.v2 import wire as v2wire
from tests.support.sim import (DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, Receiver, call, ext_sign,
                               order_fields, post_xml, refund_fields, signed_xml,
                               stop_simulator, wait_for)

CODE_URL = re.compile(r"^weixin://wxpay/bizpayurl\?pr=[0-9A-Za-z]{7}$")
SCENE = '{"h5_info": {"type": "Wap", "wap_url": "https://shop.example", "wap_name": "shop"}}'


@pytest.fixture
def received():
    return []


@pytest.fixture
def app(io_loop, received):
    application = make_app(State(SimConfig.demo(), time_scale=0.001), notify_timeout=2.0)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"received": received})])
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def kind_fields(trade_type, no, base, **overrides):
    """An order of that kind, with no openid (only JSAPI needs one)."""
    extra = {"NATIVE": {"product_id": "coffee"}, "MWEB": {"scene_info": SCENE},
             "APP": {}}[trade_type]
    extra.update(overrides)
    return order_fields(None, no, trade_type=trade_type, notify_url=base + "/test-notify",
                        **extra)


async def create(client, base, trade_type, no="K1", sign_type="MD5", **overrides):
    _, data = await post_xml(client, base + "/pay/unifiedorder",
                             signed_xml(kind_fields(trade_type, no, base, **overrides),
                                        DEMO_API_KEY, sign_type))
    return data


def app_params(prepay_id, sign_type="MD5", key=DEMO_API_KEY, **overrides):
    """What an App backend hands to WXApi.sendReq: signed over the lowercase keys."""
    params = {"appid": DEMO_APPID, "partnerid": DEMO_MCH_ID, "prepayid": prepay_id,
              "package": "Sign=WXPay", "noncestr": "appn0nce", "timestamp": str(int(time.time()))}
    params.update(overrides)
    params["sign"] = ext_sign(params, key, sign_type)
    return params


async def query(client, base, no):
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "q", "out_trade_no": no}
    _, data = await post_xml(client, base + "/pay/orderquery", fields)
    return data


async def scan(client, base, code_url, **extra):
    return await call(client, base + "/sim/pay", "POST", dict({"code_url": code_url}, **extra))


# --- unifiedorder --------------------------------------------------------------------

@pytest.mark.gen_test
async def test_native_answers_a_code_url_and_the_same_one_when_repeated(http_client, base):
    data = await create(http_client, base, "NATIVE")
    assert (data["result_code"], data["trade_type"]) == ("SUCCESS", "NATIVE")
    assert CODE_URL.match(data["code_url"]) and data["prepay_id"].startswith("wx")
    assert data["sign"] == ext_sign(data)
    again = await create(http_client, base, "NATIVE", nonce_str="other")
    assert (again["code_url"], again["prepay_id"]) == (data["code_url"], data["prepay_id"])
    other = await create(http_client, base, "NATIVE", "K2")
    assert other["code_url"] != data["code_url"]


@pytest.mark.gen_test
async def test_native_without_product_id_is_wechats_invalid_request(http_client, base):
    data = await create(http_client, base, "NATIVE", product_id=None)
    assert (data["result_code"], data["err_code"]) == ("FAIL", "INVALID_REQUEST")
    assert data["err_code_des"] == "product_id为必填参数（trade_type=NATIVE）"
    assert data["sign"] == ext_sign(data)


@pytest.mark.gen_test
async def test_app_answers_a_prepay_id_only(http_client, base):
    data = await create(http_client, base, "APP")
    assert (data["result_code"], data["trade_type"]) == ("SUCCESS", "APP")
    assert data["prepay_id"].startswith("wx")
    assert "code_url" not in data and "mweb_url" not in data


@pytest.mark.gen_test
async def test_mweb_answers_an_mweb_url_on_the_simulator(http_client, base):
    data = await create(http_client, base, "MWEB")
    assert (data["result_code"], data["trade_type"]) == ("SUCCESS", "MWEB")
    url = urllib.parse.urlsplit(data["mweb_url"])
    assert base + "/cgi-bin/mmpayweb-bin/checkmweb" == "%s://%s%s" % url[:3]
    params = urllib.parse.parse_qs(url.query)
    assert params["prepay_id"] == [data["prepay_id"]]
    assert re.match(r"^[0-9]{9,10}$", params["package"][0])
    assert data["sign"] == ext_sign(data)


@pytest.mark.gen_test
async def test_mweb_without_scene_info_is_wechats_invalid_request(http_client, base):
    data = await create(http_client, base, "MWEB", scene_info=None)
    assert (data["result_code"], data["err_code"]) == ("FAIL", "INVALID_REQUEST")
    assert data["err_code_des"] == "scene_info为必填参数（trade_type=MWEB）"
    assert data["sign"] == ext_sign(data)


# --- the phone: Native scan ----------------------------------------------------------

@pytest.mark.gen_test
async def test_scanning_the_code_url_pays_queries_and_notifies_as_native(http_client, base,
                                                                          received):
    code_url = (await create(http_client, base, "NATIVE"))["code_url"]
    status, paid = await scan(http_client, base, code_url)
    assert status == 200, paid
    assert (paid["out_trade_no"], paid["trade_type"]) == ("K1", "NATIVE")
    queried = await query(http_client, base, "K1")
    assert (queried["trade_state"], queried["trade_type"]) == ("SUCCESS", "NATIVE")
    assert queried["transaction_id"] == paid["transaction_id"]
    assert re.match(r"^o[0-9A-Za-z_-]{27}$", queried["openid"])     # the payer who scanned
    assert await wait_for(lambda: received)
    note = v2wire.parse_xml(received[0])
    assert (note["trade_type"], note["openid"]) == ("NATIVE", queried["openid"])
    assert note["sign"] == ext_sign(note)


@pytest.mark.gen_test
async def test_a_code_url_paid_twice_is_already_paid(http_client, base):
    code_url = (await create(http_client, base, "NATIVE"))["code_url"]
    assert (await scan(http_client, base, code_url))[0] == 200
    status, data = await scan(http_client, base, code_url)
    assert status == 409 and "该订单已支付" in data["errMsg"]


@pytest.mark.gen_test
async def test_a_code_url_expires_with_its_prepay_id_after_two_hours(http_client, base, app):
    code_url = (await create(http_client, base, "NATIVE"))["code_url"]
    app.sim_state.clock.advance(7.3)        # 2 hours at time scale 0.001
    status, data = await scan(http_client, base, code_url)
    assert status == 400 and "expired" in data["errMsg"]
    renewed = (await create(http_client, base, "NATIVE"))["code_url"]
    assert renewed != code_url
    assert (await scan(http_client, base, code_url))[0] == 400
    assert (await scan(http_client, base, renewed))[0] == 200


@pytest.mark.gen_test
@pytest.mark.parametrize("code_url", ["weixin://wxpay/bizpayurl?pr=nothere", "https://x/", 7])
async def test_an_unknown_code_url_is_refused(http_client, base, code_url):
    status, data = await scan(http_client, base, code_url)
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail")


@pytest.mark.gen_test
async def test_a_closed_native_order_cannot_be_scanned(http_client, base):
    code_url = (await create(http_client, base, "NATIVE"))["code_url"]
    close = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "c", "out_trade_no": "K1"}
    _, closed = await post_xml(http_client, base + "/pay/closeorder", close)
    assert closed["result_code"] == "SUCCESS"
    status, data = await scan(http_client, base, code_url)
    assert status == 409 and "该订单已关闭" in data["errMsg"]
    assert (await query(http_client, base, "K1"))["trade_state"] == "CLOSED"


@pytest.mark.gen_test
async def test_scan_results_and_user(http_client, base):
    code_url = (await create(http_client, base, "NATIVE"))["code_url"]
    status, data = await scan(http_client, base, code_url, result="CANCEL")
    assert status == 400 and data["errMsg"] == "requestPayment:fail cancel"
    status, data = await scan(http_client, base, code_url, result="BOGUS")
    assert status == 400
    status, data = await scan(http_client, base, code_url, user="bob")
    assert status == 200
    login = (await call(http_client, base + "/sim/login", "POST", {"user": "bob"}))[1]
    assert (await query(http_client, base, "K1"))["openid"] == login["openid"]


# --- the phone: the App's call ---------------------------------------------------------

@pytest.mark.gen_test
@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
async def test_the_app_call_pays_an_app_order(http_client, base, received, sign_type):
    prepay_id = (await create(http_client, base, "APP", sign_type=sign_type))["prepay_id"]
    status, paid = await call(http_client, base + "/sim/pay", "POST",
                              app_params(prepay_id, sign_type))
    assert status == 200, paid
    assert paid["trade_type"] == "APP"
    queried = await query(http_client, base, "K1")
    assert (queried["trade_state"], queried["trade_type"]) == ("SUCCESS", "APP")
    assert await wait_for(lambda: received)
    assert v2wire.parse_xml(received[0])["trade_type"] == "APP"


@pytest.mark.gen_test
async def test_the_app_call_takes_prepay_id_for_prepayid(http_client, base):
    params = app_params((await create(http_client, base, "APP"))["prepay_id"])
    params["prepay_id"] = params.pop("prepayid")     # signed as prepayid, sent misspelt
    status, paid = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 200 and paid["trade_type"] == "APP", paid
    assert (await query(http_client, base, "K1"))["trade_state"] == "SUCCESS"


@pytest.mark.gen_test
async def test_a_bad_app_sign_is_refused_with_the_explanation(http_client, base, app):
    prepay_id = (await create(http_client, base, "APP"))["prepay_id"]
    params = app_params(prepay_id)
    camel = {"appId": params["appid"], "partnerId": DEMO_MCH_ID, "prepayId": prepay_id,
             "package": "Sign=WXPay", "nonceStr": params["noncestr"],
             "timeStamp": params["timestamp"]}
    params["sign"] = ext_sign(camel)
    status, data = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 400 and data["errMsg"] == "requestPayment:fail 支付验证签名失败"
    entry = app.sim_state.requests[-1]
    assert entry["signature"] == "bad"
    explanation = entry["explanation"]
    assert explanation["string_to_sign"].startswith("appid=%s&noncestr=" % DEMO_APPID)
    assert "package=Sign=WXPay&partnerid=%s&prepayid=%s" % (DEMO_MCH_ID, prepay_id) \
        in explanation["string_to_sign"]
    assert explanation["expected_sign"] == ext_sign(app_params(prepay_id))
    assert DEMO_API_KEY not in str(explanation)
    assert any("prepayId" in hint for hint in explanation["hints"]), explanation["hints"]
    assert (await query(http_client, base, "K1"))["trade_state"] == "NOTPAY"


@pytest.mark.gen_test
async def test_an_app_sign_of_the_other_sign_type_is_refused(http_client, base, app):
    prepay_id = (await create(http_client, base, "APP", sign_type="HMAC-SHA256"))["prepay_id"]
    status, data = await call(http_client, base + "/sim/pay", "POST", app_params(prepay_id))
    assert status == 400 and data["errMsg"] == "requestPayment:fail 支付验证签名失败"
    hints = " ".join(app.sim_state.requests[-1]["explanation"]["hints"])
    assert "HMAC-SHA256" in hints


@pytest.mark.gen_test
@pytest.mark.parametrize("change", [{"package": "prepay_id=X"}, {"partnerid": "1900000000"},
                                    {"appid": "wxnotbound00000000"}, {"prepayid": "wxnope"}])
async def test_app_call_fields_must_name_the_order(http_client, base, change):
    prepay_id = (await create(http_client, base, "APP"))["prepay_id"]
    params = app_params(prepay_id, **change)
    status, data = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail")
    assert (await query(http_client, base, "K1"))["trade_state"] == "NOTPAY"


@pytest.mark.gen_test
async def test_app_call_fields_must_be_strings(http_client, base):
    prepay_id = (await create(http_client, base, "APP"))["prepay_id"]
    params = app_params(prepay_id)
    params["timestamp"] = int(params["timestamp"])
    status, data = await call(http_client, base + "/sim/pay", "POST", params)
    assert status == 400 and "timestamp" in data["errMsg"]


# --- the phone: H5 --------------------------------------------------------------------

@pytest.mark.gen_test
async def test_opening_the_mweb_url_pays_an_h5_order(http_client, base, received):
    mweb_url = (await create(http_client, base, "MWEB"))["mweb_url"]
    status, paid = await call(http_client, base + "/sim/pay", "POST", {"mweb_url": mweb_url})
    assert status == 200, paid
    assert paid["trade_type"] == "MWEB"
    assert (await query(http_client, base, "K1"))["trade_type"] == "MWEB"
    assert await wait_for(lambda: received)
    assert v2wire.parse_xml(received[0])["trade_type"] == "MWEB"
    status, data = await call(http_client, base + "/sim/pay", "POST", {"mweb_url": mweb_url})
    assert status == 409 and "该订单已支付" in data["errMsg"]


@pytest.mark.gen_test
async def test_an_mweb_url_lives_five_minutes_its_prepay_id_two_hours(http_client, base, app):
    first = await create(http_client, base, "MWEB")
    app.sim_state.clock.advance(0.301)      # 5 minutes and 1 second at time scale 0.001
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              {"mweb_url": first["mweb_url"]})
    # what WeChat's checkmweb page shows for an mweb_url past its 5 minutes
    assert status == 400 and "支付请求已失效，请重新发起支付" in data["errMsg"], data
    again = await create(http_client, base, "MWEB")
    assert again["prepay_id"] == first["prepay_id"]      # the prepay_id still lives (2 h)
    assert again["mweb_url"] != first["mweb_url"]
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              {"mweb_url": first["mweb_url"]})
    assert status == 400 and "支付请求已失效" in data["errMsg"], data
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              {"mweb_url": again["mweb_url"]})
    assert status == 200 and data["trade_type"] == "MWEB", data


@pytest.mark.gen_test
async def test_an_mweb_url_with_another_package_is_refused(http_client, base):
    mweb_url = (await create(http_client, base, "MWEB"))["mweb_url"]
    forged = re.sub(r"package=[0-9]+", "package=1", mweb_url)
    status, data = await call(http_client, base + "/sim/pay", "POST", {"mweb_url": forged})
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail")


@pytest.mark.gen_test
@pytest.mark.parametrize("field", ["mweb_url", "h5_url"])
async def test_an_h5_link_that_is_no_url_is_refused_not_a_500(http_client, base, field):
    link = "http://[::1/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1&package=1"
    status, data = await call(http_client, base + "/sim/pay", "POST", {field: link})
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail"), data


@pytest.mark.gen_test
async def test_kinds_are_not_interchangeable(http_client, base):
    native = await create(http_client, base, "NATIVE", "N1")
    app_order = await create(http_client, base, "APP", "A1")
    status, _ = await call(http_client, base + "/sim/pay", "POST",
                           app_params(native["prepay_id"]))
    assert status == 400      # the App's call pays APP orders only
    mweb = "%s/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=%s&package=1" % (base,
                                                                         app_order["prepay_id"])
    status, _ = await call(http_client, base + "/sim/pay", "POST", {"mweb_url": mweb})
    assert status == 400


# --- the console's phone, refunds ------------------------------------------------------

@pytest.mark.gen_test
@pytest.mark.parametrize("trade_type", ["NATIVE", "APP", "MWEB"])
async def test_the_console_pays_every_kind_and_it_refunds_as_jsapi(http_client, base, received,
                                                                   trade_type):
    await create(http_client, base, trade_type)
    status, data = await call(http_client, base + "/sim/orders/K1/phone", "POST",
                              {"result": "SUCCESS"})
    assert status == 200 and data["trade_state"] == "SUCCESS", data
    assert await wait_for(lambda: received)
    note = v2wire.parse_xml(received[0])
    assert note["trade_type"] == trade_type and note["openid"]
    _, refund = await post_xml(http_client, base + "/secapi/pay/refund",
                               refund_fields(out_trade_no="K1"))
    assert refund["result_code"] == "SUCCESS", refund
    assert (await query(http_client, base, "K1"))["trade_state"] == "REFUND"
