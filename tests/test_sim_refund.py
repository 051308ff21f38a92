"""Refunds in the simulator: rules, refundquery, settlement, control plane, notifications.

Requests are signed with wechatpy's signer and notifications decrypted with pycryptodome
(and wechatpy), so the simulator's own protocol code is checked, not trusted.
"""
import asyncio
import base64
import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
import tornado.web
import xmltodict
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad
from tornado.httpclient import HTTPClientError, HTTPRequest
from wechatpy.pay import WeChatPay

from simulator.v2 import wire as protocol
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support import load_vectors
from tests.support.sim import (stop_simulator, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, SUCCESS_REPLY, call,
                               ext_sign, new_order, paid_order, post_xml, refund_fields,
                               signed_xml, wait_for)

TIME_SCALE = 0.01       # notify retries: 15 s -> 0.15 s
REFUND_DELAY = 20.0     # -> 0.2 s
FAIL_REPLY = (b"<xml><return_code><![CDATA[FAIL]]></return_code>"
              b"<return_msg><![CDATA[busy]]></return_msg></xml>")
SANDBOX_KEY = hashlib.md5(("sandbox:%s:%s" % (DEMO_MCH_ID, DEMO_API_KEY)).encode()).hexdigest()
BEIJING = timezone(timedelta(hours=8))


# --- an independent req_info implementation (pycryptodome), never the simulator's ---------

def ext_key(api_key):
    return hashlib.md5(api_key.encode("utf-8")).hexdigest().encode("ascii")


def ext_decrypt(req_info, api_key):
    cipher = AES.new(ext_key(api_key), AES.MODE_ECB)
    return unpad(cipher.decrypt(base64.b64decode(req_info)), 16)


def ext_encrypt(plaintext, api_key):
    cipher = AES.new(ext_key(api_key), AES.MODE_ECB)
    return base64.b64encode(cipher.encrypt(pad(plaintext, 16))).decode("ascii")


def ext_fields(req_info, api_key=DEMO_API_KEY):
    return dict(xmltodict.parse(ext_decrypt(req_info, api_key))["root"])


# --- fixtures -------------------------------------------------------------------------------

class Box:
    def __init__(self):
        self.received, self.times, self.replies = [], [], []


class Receiver(tornado.web.RequestHandler):
    def initialize(self, box):
        self.box = box

    def post(self):
        self.box.received.append(dict(xmltodict.parse(self.request.body)["xml"]))
        self.box.times.append(asyncio.get_running_loop().time())
        self.finish(self.box.replies.pop(0) if self.box.replies else SUCCESS_REPLY)


@pytest.fixture
def box():
    return Box()


@pytest.fixture
def app(io_loop, box):
    application = make_app(State(SimConfig.demo(), time_scale=TIME_SCALE,
                                 refund_delay=REFUND_DELAY), notify_timeout=1.0)
    application.add_handlers(r".*", [(r"/refund-notify", Receiver, {"box": box})])
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def verified(fields, key=DEMO_API_KEY, sign_type="MD5"):
    return fields.get("sign") == ext_sign(fields, key, sign_type)


async def refund(client, base, prefix="", key=DEMO_API_KEY, sign_type="MD5", slash="",
                 **fields):
    _, data = await post_xml(client, base + prefix + "/secapi/pay/refund" + slash,
                             signed_xml(refund_fields(**fields), key, sign_type))
    return data


async def refundquery(client, base, prefix="", key=DEMO_API_KEY, **keys):
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "q"}
    fields.update(keys)
    _, data = await post_xml(client, base + prefix + "/pay/refundquery", signed_xml(fields, key))
    return data


async def orderquery(client, base, out_trade_no):
    _, data = await post_xml(client, base + "/pay/orderquery",
                             {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "o",
                              "out_trade_no": out_trade_no})
    return data


def assert_error(data, err_code, des=None):
    assert (data["return_code"], data["result_code"], data["err_code"]) == (
        "SUCCESS", "FAIL", err_code), data
    assert verified(data), data
    if des is not None:
        assert data["err_code_des"] == des


# --- req_info -------------------------------------------------------------------------------

def test_r1_decrypts_with_the_simulators_code():
    (r1,) = load_vectors()["refund_notify"]
    assert protocol.decrypt_fields(r1["req_info"], r1["api_key"]) == r1["expected"]
    with pytest.raises(protocol.DecryptError):
        protocol.decrypt_fields(r1["req_info"], DEMO_API_KEY)
    with pytest.raises(protocol.DecryptError):
        protocol.decrypt_fields("not base64!", r1["api_key"])


def test_encryption_round_trips_with_an_independent_implementation():
    (r1,) = load_vectors()["refund_notify"]
    # The simulator writes the plaintext exactly as WeChat did: ECB is deterministic, so
    # encrypting R1's fields reproduces WeChat's req_info byte for byte.
    plaintext = protocol.root_xml(r1["expected"])
    assert protocol.encrypt_req_info(plaintext, r1["api_key"]) == r1["req_info"]
    assert ext_decrypt(r1["req_info"], r1["api_key"]) == plaintext
    for text in (b"", b"x" * 16, "<root><a><![CDATA[退款]]></a></root>".encode()):
        ours = protocol.encrypt_req_info(text, DEMO_API_KEY)
        assert ext_decrypt(ours, DEMO_API_KEY) == text
        assert protocol.decrypt_req_info(ext_encrypt(text, DEMO_API_KEY), DEMO_API_KEY) == text
    assert protocol.aes_key(DEMO_API_KEY) == ext_key(DEMO_API_KEY) and len(ext_key("k")) == 32


# --- refund rules -----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_refund_answer_is_signed_and_shaped_like_wechats(http_client, base):
    transaction_id, _ = await paid_order(http_client, base, "P1")
    data = await refund(http_client, base, out_refund_no="R-1", refund_fee=30)
    assert (data["return_code"], data["result_code"]) == ("SUCCESS", "SUCCESS"), data
    assert verified(data)
    assert (data["appid"], data["mch_id"], data["transaction_id"]) == (
        DEMO_APPID, DEMO_MCH_ID, transaction_id)
    assert (data["out_trade_no"], data["out_refund_no"]) == ("P1", "R-1")
    assert (data["refund_fee"], data["total_fee"], data["cash_fee"], data["cash_refund_fee"]) \
        == ("30", "100", "100", "30")
    assert re.match(r"^50300[0-9]{24}$", data["refund_id"])
    assert data["refund_id"][10:18] == datetime.now(BEIJING).strftime("%Y%m%d")
    # HMAC-SHA256 requests get HMAC-SHA256 answers; transaction_id finds the order too.
    data = await refund(http_client, base, sign_type="HMAC-SHA256", out_refund_no="R-2",
                        refund_fee=10, out_trade_no=None, transaction_id=transaction_id)
    assert data["result_code"] == "SUCCESS" and verified(data, sign_type="HMAC-SHA256")
    assert data["refund_id"] != (await refundquery(http_client, base, out_refund_no="R-1"))[
        "refund_id_0"]


@pytest.mark.gen_test(timeout=10)
async def test_only_paid_orders_are_refunded(http_client, base):
    await new_order(http_client, base, "UNPAID")
    assert_error(await refund(http_client, base, out_trade_no="UNPAID"), "ORDERNOTEXIST",
                 "订单不存在")
    assert_error(await refund(http_client, base, out_trade_no="NOSUCH"), "ORDERNOTEXIST")
    assert_error(await refund(http_client, base, out_trade_no=None,
                              transaction_id="4200000000000000000000000000"), "ORDERNOTEXIST")
    assert (await orderquery(http_client, base, "UNPAID"))["trade_state"] == "NOTPAY"


@pytest.mark.gen_test(timeout=10)
async def test_amount_rules(http_client, base):
    await paid_order(http_client, base, "P1")
    assert_error(await refund(http_client, base, out_refund_no="A0", total_fee=99, refund_fee=1),
                 "REFUND_FEE_MISMATCH", "订单金额或退款金额与之前请求不一致，请核实后再试")
    for bad in ({"refund_fee": 101}, {"refund_fee": 0}, {"refund_fee": "1.5"},
                {"total_fee": "abc"}):
        resp, data = await post_xml(http_client, base + "/secapi/pay/refund",
                                    refund_fields(out_refund_no="A0", **bad))
        assert data["return_code"] == "FAIL" and "sign" not in data, data
        assert data["return_msg"] in ("invalid refund_fee", "invalid total_fee")
    assert (await refund(http_client, base, out_refund_no="A1", refund_fee=30))[
        "result_code"] == "SUCCESS"
    assert_error(await refund(http_client, base, out_refund_no="A2", refund_fee=71),
                 "INVALID_REQUEST", "refund_fee大于可退金额")
    assert (await refund(http_client, base, out_refund_no="A3", refund_fee=70))[
        "result_code"] == "SUCCESS"                            # the rest
    assert_error(await refund(http_client, base, out_refund_no="A4", refund_fee=1),
                 "ERROR", "订单已全额退款")
    status, order = await call(http_client, base + "/sim/orders/P1")
    assert order["refunded_fee"] == 100 and len(order["refunds"]) == 2
    assert order["trade_state"] == "REFUND"


@pytest.mark.gen_test(timeout=30)
async def test_at_most_50_refunds_per_order(http_client, base):
    await paid_order(http_client, base, "P50", total_fee="1000")
    for n in range(50):
        data = await refund(http_client, base, out_trade_no="P50", total_fee=1000,
                            out_refund_no="N%d" % n, refund_fee=1)
        assert data["result_code"] == "SUCCESS", (n, data)
    assert_error(await refund(http_client, base, out_trade_no="P50", total_fee=1000,
                              out_refund_no="N50", refund_fee=1), "INVALID_REQUEST")
    _, listed = await call(http_client, base + "/sim/refunds?out_trade_no=P50")
    assert len(listed["refunds"]) == 50


@pytest.mark.gen_test(timeout=10)
async def test_same_out_refund_no_refunds_once(http_client, base):
    await paid_order(http_client, base, "P1")
    await paid_order(http_client, base, "P2", user="bob")
    first = await refund(http_client, base, out_refund_no="ONCE", refund_fee=40)
    again = await refund(http_client, base, out_refund_no="ONCE", refund_fee=40)
    assert first["result_code"] == again["result_code"] == "SUCCESS"
    assert again["refund_id"] == first["refund_id"] and again["refund_fee"] == "40"
    assert_error(await refund(http_client, base, out_refund_no="ONCE", refund_fee=41),
                 "REFUND_FEE_MISMATCH")
    assert_error(await refund(http_client, base, out_refund_no="ONCE", refund_fee=40,
                              out_trade_no="P2"), "INVALID_REQUEST")
    _, order = await call(http_client, base + "/sim/orders/P1")
    assert order["refunded_fee"] == 40 and [r["out_refund_no"] for r in order["refunds"]] == [
        "ONCE"]
    _, log = await call(http_client, base + "/sim/requests")
    repeats = [e.get("repeated") for e in log["requests"] if e["api"] == "/secapi/pay/refund"
               and e.get("out_refund_no") == "ONCE"]
    assert repeats == [False, True]


@pytest.mark.gen_test(timeout=10)
async def test_out_refund_no_format_and_required_fields(http_client, base):
    await paid_order(http_client, base, "P1")
    assert_error(await refund(http_client, base, out_refund_no="x" * 65), "PARAM_ERROR")
    assert (await refund(http_client, base, out_refund_no="y" * 64, refund_fee=1))[
        "result_code"] == "SUCCESS"
    for missing in ("out_refund_no", "refund_fee", "total_fee"):
        _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                                 refund_fields(**{missing: None}))
        assert (data["return_code"], data["return_msg"]) == ("FAIL", "缺少参数"), missing
    _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                             refund_fields(out_trade_no=None))
    assert data["return_msg"] == "缺少参数"
    _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                             signed_xml(refund_fields(out_refund_no="Z"), key="wrong" * 6 + "xx"))
    assert (data["return_code"], data["return_msg"]) == ("FAIL", "签名错误")
    _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                             refund_fields(out_refund_no="Z", notify_url="ftp://x/y"))
    assert data["return_msg"] == "invalid notify_url"
    _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                             refund_fields(out_refund_no="Z", notify_url="http://[::1/y"))
    assert data["return_msg"] == "invalid notify_url"


@pytest.mark.gen_test(timeout=10)
async def test_paths_prefixes_faults_and_negative_tests(http_client, base):
    await paid_order(http_client, base, "P1")
    for n, path in enumerate(("/secapi/pay/refund/", "/xdc/apiv2sandbox/secapi/pay/refund",
                              "/sandboxnew/secapi/pay/refund/")):
        key = SANDBOX_KEY if "sandbox" in path else DEMO_API_KEY
        _, data = await post_xml(http_client, base + path,
                                 signed_xml(refund_fields(out_refund_no="S%d" % n,
                                                          refund_fee=1), key))
        assert data["result_code"] == "SUCCESS" and verified(data, key), (path, data)
    for path in ("/pay/refundquery/", "/sandboxnew/pay/refundquery"):
        key = SANDBOX_KEY if "sandbox" in path else DEMO_API_KEY
        _, data = await post_xml(http_client, base + path, signed_xml(
            {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "q",
             "out_refund_no": "S0"}, key))
        assert data["refund_count"] == "1" and verified(data, key), data
    status, _ = await call(http_client, base + "/sim/faults", "POST",
                           {"path": "/sandboxnew/secapi/pay/refund/", "kind": "system_error",
                            "count": 1})
    assert status == 201
    assert_error(await refund(http_client, base, out_refund_no="F1", refund_fee=1),
                 "SYSTEMERROR")
    _, data = await post_xml(http_client, base + "/secapi/pay/refund",
                             refund_fields(out_refund_no="F1", refund_fee=1),
                             headers={"Wechatpay-Negative-Test": "NOTENOUGH"})
    assert_error(data, "NOTENOUGH")
    _, listed = await call(http_client, base + "/sim/refunds")
    assert "F1" not in [r["out_refund_no"] for r in listed["refunds"]]


@pytest.mark.gen_test(timeout=10)
async def test_trade_state_becomes_refund(http_client, base):
    await paid_order(http_client, base, "P1")
    assert (await orderquery(http_client, base, "P1"))["trade_state"] == "SUCCESS"
    await refund(http_client, base, out_refund_no="T1", refund_fee=10)
    data = await orderquery(http_client, base, "P1")
    assert data["trade_state"] == "REFUND" and verified(data)
    assert data["trade_state_desc"] == "订单发生过退款，退款详情请查询退款单"
    _, data = await post_xml(http_client, base + "/pay/closeorder",
                             {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "c",
                              "out_trade_no": "P1"})
    assert data["err_code"] == "ORDERPAID"


# --- refundquery ----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_refundquery_by_each_key_and_priority(http_client, base, app):
    app.sim_state.refund_delay = 1e6        # stays PROCESSING during this test
    transaction_id, _ = await paid_order(http_client, base, "P1")
    await paid_order(http_client, base, "P2", user="bob")
    a = await refund(http_client, base, out_refund_no="QA", refund_fee=30)
    b = await refund(http_client, base, out_refund_no="QB", refund_fee=20)
    c = await refund(http_client, base, out_refund_no="QC", refund_fee=5, out_trade_no="P2")
    by_id = await refundquery(http_client, base, refund_id=b["refund_id"])
    assert verified(by_id) and by_id["result_code"] == "SUCCESS"
    assert (by_id["refund_count"], by_id["total_refund_count"]) == ("1", "2")
    assert (by_id["out_refund_no_0"], by_id["refund_id_0"], by_id["refund_fee_0"]) == (
        "QB", b["refund_id"], "20")
    assert (by_id["transaction_id"], by_id["out_trade_no"], by_id["total_fee"],
            by_id["cash_fee"]) == (transaction_id, "P1", "100", "100")
    assert by_id["refund_status_0"] == "PROCESSING" and "refund_success_time_0" not in by_id
    assert by_id["refund_channel_0"] == "ORIGINAL" and by_id["refund_recv_accout_0"]
    by_no = await refundquery(http_client, base, out_refund_no="QA")
    assert by_no["refund_id_0"] == a["refund_id"] and by_no["refund_count"] == "1"
    for keys in ({"transaction_id": transaction_id}, {"out_trade_no": "P1"}):
        data = await refundquery(http_client, base, **keys)
        assert data["refund_count"] == data["total_refund_count"] == "2", keys
        assert [data["out_refund_no_0"], data["out_refund_no_1"]] == ["QA", "QB"]
        assert "out_refund_no_2" not in data
    # refund_id > out_refund_no > transaction_id > out_trade_no
    data = await refundquery(http_client, base, refund_id=c["refund_id"], out_refund_no="QA",
                             out_trade_no="P1")
    assert data["out_refund_no_0"] == "QC" and data["out_trade_no"] == "P2"
    data = await refundquery(http_client, base, out_refund_no="QC", out_trade_no="P1")
    assert data["out_refund_no_0"] == "QC"
    data = await refundquery(http_client, base, transaction_id=transaction_id,
                             out_trade_no="P2")
    assert data["out_trade_no"] == "P1"
    for keys in ({"refund_id": "50300000000000000000000000000"}, {"out_refund_no": "NOPE"},
                 {"out_trade_no": "NOSUCH"}):
        assert_error(await refundquery(http_client, base, **keys), "REFUNDNOTEXIST")
    await paid_order(http_client, base, "P3", user="carol")
    assert_error(await refundquery(http_client, base, out_trade_no="P3"), "REFUNDNOTEXIST")


@pytest.mark.gen_test(timeout=30)
async def test_refundquery_pages_of_ten_with_offset(http_client, base):
    await paid_order(http_client, base, "PG", total_fee="1000")
    for n in range(12):
        await refund(http_client, base, out_trade_no="PG", total_fee=1000,
                     out_refund_no="G%02d" % n, refund_fee=1)
    first = await refundquery(http_client, base, out_trade_no="PG")
    assert (first["refund_count"], first["total_refund_count"]) == ("10", "12")
    assert first["out_refund_no_9"] == "G09" and "out_refund_no_10" not in first
    rest = await refundquery(http_client, base, out_trade_no="PG", offset="10")
    assert rest["refund_count"] == "2" and rest["out_refund_no_0"] == "G10"
    assert_error(await refundquery(http_client, base, out_trade_no="PG", offset="12"),
                 "PARAM_ERROR")


# --- settlement -----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_processing_then_success_after_the_delay(http_client, base):
    await paid_order(http_client, base, "P1")
    await refund(http_client, base, out_refund_no="D1", refund_fee=25)
    data = await refundquery(http_client, base, out_refund_no="D1")
    assert data["refund_status_0"] == "PROCESSING"
    await asyncio.sleep(REFUND_DELAY * TIME_SCALE + 0.1)
    data = await refundquery(http_client, base, out_refund_no="D1")
    assert data["refund_status_0"] == "SUCCESS" and verified(data)
    success = datetime.strptime(data["refund_success_time_0"], "%Y-%m-%d %H:%M:%S")
    assert abs(success - datetime.now(BEIJING).replace(tzinfo=None)) < timedelta(minutes=1)
    _, listed = await call(http_client, base + "/sim/refunds?status=SUCCESS")
    assert [r["out_refund_no"] for r in listed["refunds"]] == ["D1"]


@pytest.mark.gen_test(timeout=10)
async def test_control_plane_closes_or_breaks_refunds(http_client, base, app, box):
    app.sim_state.refund_delay = 1e6
    await paid_order(http_client, base, "P1")
    notify_url = base + "/refund-notify"
    await refund(http_client, base, out_refund_no="C1", refund_fee=60, notify_url=notify_url)
    status, data = await call(http_client, base + "/sim/refunds/C1", "POST",
                              {"status": "REFUNDCLOSE"})
    assert status == 200 and data["refund_status"] == "REFUNDCLOSE", data
    status, data = await call(http_client, base + "/sim/refunds/C1", "POST",
                              {"status": "SUCCESS"})
    assert status == 409 and data["error"]["code"] == "ALREADY_SETTLED"
    for bad in ({"status": "DONE"}, {}):
        status, _ = await call(http_client, base + "/sim/refunds/C1", "POST", bad)
        assert status == 400
    status, _ = await call(http_client, base + "/sim/refunds/NOPE", "POST", {"status": "CHANGE"})
    assert status == 404
    data = await refundquery(http_client, base, out_refund_no="C1")
    assert data["refund_status_0"] == "REFUNDCLOSE" and "refund_success_time_0" not in data
    # A closed refund gives its amount back: 100 can still be refunded in full.
    assert (await refund(http_client, base, out_refund_no="C2", refund_fee=100))[
        "result_code"] == "SUCCESS"
    status, data = await call(http_client, base + "/sim/refunds/C2", "POST", {"status": "CHANGE"})
    assert data["refund_status"] == "CHANGE"
    assert (await refundquery(http_client, base, out_refund_no="C2"))["refund_status_0"] \
        == "CHANGE"
    assert await wait_for(lambda: len(box.received) == 1)
    note = ext_fields(box.received[0]["req_info"])
    assert (note["out_refund_no"], note["refund_status"]) == ("C1", "REFUNDCLOSE")
    assert "success_time" not in note


@pytest.mark.gen_test(timeout=10)
async def test_next_refund_outcome_of_an_order(http_client, base):
    await paid_order(http_client, base, "P1")
    status, data = await call(http_client, base + "/sim/orders/P1/refund-outcome", "POST",
                              {"status": "CHANGE"})
    assert status == 200 and data == {"out_trade_no": "P1", "mch_id": DEMO_MCH_ID,
                                      "next_refund_outcome": "CHANGE"}
    status, _ = await call(http_client, base + "/sim/orders/P1/refund-outcome", "POST",
                           {"status": "PROCESSING"})
    assert status == 400
    status, _ = await call(http_client, base + "/sim/orders/NOPE/refund-outcome", "POST",
                           {"status": "CHANGE"})
    assert status == 404
    await refund(http_client, base, out_refund_no="O1", refund_fee=10)
    await refund(http_client, base, out_refund_no="O2", refund_fee=10)
    data = await refundquery(http_client, base, out_trade_no="P1")
    assert data["refund_status_0"] == data["refund_status_1"] == "PROCESSING"
    await asyncio.sleep(REFUND_DELAY * TIME_SCALE + 0.1)
    data = await refundquery(http_client, base, out_trade_no="P1")
    assert (data["refund_status_0"], data["refund_status_1"]) == ("CHANGE", "SUCCESS")


@pytest.mark.gen_test(timeout=10)
async def test_clock_advance_settles_and_reset_forgets(http_client, base, app):
    app.sim_state.refund_delay = 1e5        # 1000 s at this time scale
    await paid_order(http_client, base, "P1")
    await refund(http_client, base, out_refund_no="K1", refund_fee=10)
    assert (await refundquery(http_client, base, out_refund_no="K1"))["refund_status_0"] \
        == "PROCESSING"
    status, _ = await call(http_client, base + "/sim/clock", "POST", {"advance": 1001})
    assert status == 200
    assert app.sim_state.refunds[(DEMO_MCH_ID, "K1")].refund_status == "SUCCESS"
    status, _ = await call(http_client, base + "/sim/reset", "POST")
    _, listed = await call(http_client, base + "/sim/refunds")
    assert listed["refunds"] == []
    assert_error(await refundquery(http_client, base, out_refund_no="K1"), "REFUNDNOTEXIST")


@pytest.mark.gen_test(timeout=10)
async def test_reads_never_settle_only_timers_and_the_clock_do(http_client, base, app, box):
    app.sim_state.refund_delay = 1e5        # 1000 s at this time scale
    # the payment notification is answered SUCCESS: no retry left in flight when the clock jumps
    await paid_order(http_client, base, "P1", notify_url=base + "/refund-notify")
    assert await wait_for(lambda: len(box.received) == 1)
    await refund(http_client, base, out_refund_no="W1", refund_fee=10)
    app.sim_settlement.cancel_all()         # no timer: only a write may settle it now
    app.sim_state.clock.advance(1001)       # due, as far as the clock goes
    assert (await refundquery(http_client, base, out_refund_no="W1"))["refund_status_0"] \
        == "PROCESSING"
    for path in ("/sim/refunds/W1", "/sim/refunds", "/sim/orders/P1", "/sim/orders"):
        status, _ = await call(http_client, base + path)
        assert status == 200
    assert app.sim_state.refunds[(DEMO_MCH_ID, "W1")].refund_status == "PROCESSING"
    status, _ = await call(http_client, base + "/sim/clock", "POST", {"advance": 0})
    assert status == 200
    assert app.sim_state.refunds[(DEMO_MCH_ID, "W1")].refund_status == "SUCCESS"


# --- refund notifications ---------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_notification_is_encrypted_unsigned_and_retried(http_client, base, box):
    box.replies = [FAIL_REPLY]
    transaction_id, _ = await paid_order(http_client, base, "P1",
                                         notify_url=base + "/payment-notify-nowhere")
    answer = await refund(http_client, base, out_refund_no="N1", refund_fee=35,
                          notify_url=base + "/refund-notify", refund_desc="broken cup")
    assert await wait_for(lambda: len(box.received) == 2, timeout=5)
    gap = box.times[1] - box.times[0]
    assert 0.12 <= gap <= 0.6, gap                          # 15 s at time scale 0.01
    note = box.received[0]
    assert sorted(note) == ["appid", "mch_id", "nonce_str", "req_info", "return_code"]
    assert (note["return_code"], note["appid"], note["mch_id"]) == (
        "SUCCESS", DEMO_APPID, DEMO_MCH_ID)
    plain = ext_fields(note["req_info"])
    assert plain == {
        "out_refund_no": "N1", "out_trade_no": "P1", "refund_id": answer["refund_id"],
        "transaction_id": transaction_id, "total_fee": "100", "refund_fee": "35",
        "settlement_total_fee": "100", "settlement_refund_fee": "35", "refund_status": "SUCCESS",
        "success_time": plain["success_time"], "refund_recv_accout": "支付用户的零钱",
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS", "refund_request_source": "API"}
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", plain["success_time"])
    with pytest.raises(ValueError):
        ext_fields(note["req_info"], "another key of 32 characters...")
    # wechatpy, unchanged, decrypts it too.
    pay = WeChatPay(DEMO_APPID, DEMO_API_KEY, DEMO_MCH_ID)
    parsed = pay.parse_refund_notify_result(xmltodict.unparse({"xml": note}))
    assert parsed["refund_fee"] == 35 and parsed["out_refund_no"] == "N1"
    await asyncio.sleep(0.4)                                 # nothing after the SUCCESS reply
    assert len(box.received) == 2
    _, log = await call(http_client, base + "/sim/notifications?kind=refund")
    records = log["notifications"]
    assert [(r["attempt"], r["outcome"]) for r in records] == [(1, "fail"), (2, "success")]
    assert all(r["kind"] == "refund" and r["out_refund_no"] == "N1" and r["out_trade_no"] == "P1"
               and r["refund_id"] == answer["refund_id"] for r in records)
    assert records[0]["next_attempt_in"] == pytest.approx(0.15)
    _, log = await call(http_client, base + "/sim/notifications?kind=payment")
    assert log["notifications"] and all(r["kind"] == "payment" and "out_refund_no" not in r
                                        for r in log["notifications"])
    _, refund_json = await call(http_client, base + "/sim/refunds/N1")
    assert refund_json["notify_delivered"] is True and refund_json["refund_desc"] == "broken cup"


@pytest.mark.gen_test(timeout=10)
async def test_no_notify_url_no_notification(http_client, base, box):
    await paid_order(http_client, base, "P1")
    await refund(http_client, base, out_refund_no="Q1", refund_fee=10)
    await asyncio.sleep(REFUND_DELAY * TIME_SCALE + 0.15)
    assert (await refundquery(http_client, base, out_refund_no="Q1"))["refund_status_0"] \
        == "SUCCESS"
    _, log = await call(http_client, base + "/sim/notifications?kind=refund")
    assert log["notifications"] == [] and box.received == []
    status, data = await call(http_client, base + "/sim/refunds/Q1/notify", "POST", {})
    assert status == 409 and data["error"]["code"] == "NO_NOTIFY_URL"


@pytest.mark.gen_test(timeout=10)
async def test_resend_modes(http_client, base, box, app):
    app.sim_state.refund_delay = 1e6
    await paid_order(http_client, base, "P1")
    await refund(http_client, base, out_refund_no="M1", refund_fee=10,
                 notify_url=base + "/refund-notify")
    status, data = await call(http_client, base + "/sim/refunds/M1/notify", "POST", {})
    assert status == 409 and data["error"]["code"] == "NOT_SETTLED"
    await call(http_client, base + "/sim/refunds/M1", "POST", {"status": "SUCCESS"})
    assert await wait_for(lambda: len(box.received) == 1)
    status, data = await call(http_client, base + "/sim/refunds/M1/notify", "POST",
                              {"mode": "duplicate", "count": 3})
    assert status == 200 and len(data["attempts"]) == 3 and len(box.received) == 4
    await call(http_client, base + "/sim/refunds/M1/notify", "POST", {"mode": "bad_key"})
    with pytest.raises(ValueError):
        ext_fields(box.received[-1]["req_info"])
    await call(http_client, base + "/sim/refunds/M1/notify", "POST", {"mode": "wrong_amount"})
    assert ext_fields(box.received[-1]["req_info"])["refund_fee"] == "11"
    status, _ = await call(http_client, base + "/sim/refunds/M1/notify", "POST", {"mode": "x"})
    assert status == 400
    _, log = await call(http_client, base + "/sim/notifications?out_refund_no=M1")
    assert [r["forged"] for r in log["notifications"]][-2:] == [True, True]


@pytest.mark.gen_test(timeout=10)
async def test_sandbox_refund_uses_the_sandbox_key(http_client, base, box):
    await paid_order(http_client, base, "SB1", prefix="/sandboxnew", key=SANDBOX_KEY)
    data = await refund(http_client, base, prefix="/sandboxnew", key=SANDBOX_KEY,
                        out_trade_no="SB1", out_refund_no="SBR", refund_fee=50,
                        notify_url=base + "/refund-notify")
    assert data["result_code"] == "SUCCESS" and verified(data, SANDBOX_KEY)
    assert await wait_for(lambda: box.received)
    req_info = box.received[0]["req_info"]
    assert ext_fields(req_info, SANDBOX_KEY)["out_refund_no"] == "SBR"
    with pytest.raises(ValueError):
        ext_fields(req_info, DEMO_API_KEY)


# --- client certificates without TLS --------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_plain_http_needs_no_certificate_unless_required(http_client, base, app):
    await paid_order(http_client, base, "P1")
    assert (await refund(http_client, base, out_refund_no="H1", refund_fee=1))[
        "result_code"] == "SUCCESS"
    app.settings["sim_client_certs"] = True          # make_app(client_certs=True)
    with pytest.raises((HTTPClientError, OSError)) as err:
        await http_client.fetch(HTTPRequest(base + "/secapi/pay/refund", method="POST",
                                            body=signed_xml(refund_fields(out_refund_no="H2"))))
    assert getattr(err.value, "code", 599) == 599
    _, log = await call(http_client, base + "/sim/requests")
    refused = [e for e in log["requests"] if e["error"] == "NO_CLIENT_CERT"]
    assert len(refused) == 1 and refused[0]["client_cert"] == "none (plain HTTP)"
    assert "client certificate" in refused[0]["detail"]
    assert (await refundquery(http_client, base, out_refund_no="H1"))["result_code"] == "SUCCESS"
