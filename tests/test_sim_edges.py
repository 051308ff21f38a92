"""Real-world edges of WeChat's traffic the simulator reproduces (issue 13): a signed sign_type
in payment notifications, device_info echoed, empty fields in answers, coupon payments, and
CDATA as WeChat writes it. Signatures are checked with wechatpy's signer, XML parsed with
xmltodict or read raw, not with the simulator's own code."""
import json
import re

import pytest
import xmltodict
from tornado.httpclient import HTTPRequest

from simulator import cli as run_simulator   # run_simulator.py's command line
from simulator.v2 import wire as protocol
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.sim import (Receiver, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, call,
                               ext_sign, new_order, pay_params, stop_simulator, wait_for)

NOTE_WAIT = 5.0


@pytest.fixture
def received():
    return []


@pytest.fixture
def sign_type_probability():
    return 0.0


@pytest.fixture
def app(io_loop, received, sign_type_probability):
    state = State(SimConfig.demo(), time_scale=0.01, seed=7,
                  notify_sign_type_probability=sign_type_probability)
    application = make_app(state, notify_timeout=2.0)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"received": received})])
    yield application
    io_loop.run_sync(lambda: wait_for(lambda: all(
        n["outcome"] != "pending" for n in application.sim_state.notifications)))
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def fields_of(body):
    return dict(xmltodict.parse(body)["xml"] or {})


def raw_value(body, name):
    """How a field is written in the raw XML: "bare:<v>", "cdata:<v>" or None."""
    match = re.search(rb"<%s>(.*?)</%s>" % (name.encode(), name.encode()), body, re.S)
    if match is None:
        return None
    text = match.group(1).decode("utf-8")
    cdata = re.fullmatch(r"<!\[CDATA\[(.*)\]\]>", text, re.S)
    return "cdata:" + cdata.group(1) if cdata else "bare:" + text


def verified(fields, sign_type="MD5"):
    clean = {k: (v or "") for k, v in fields.items()}
    return clean["sign"] == ext_sign(clean, DEMO_API_KEY, sign_type)


def signed_with_empty_values(fields, sign_type="MD5"):
    """The sign a client that wrongly signs empty values would expect."""
    clean = {k: (v or "") for k, v in fields.items() if k != "sign"}
    text = "&".join("%s=%s" % (k, clean[k]) for k in sorted(clean)) + "&key=" + DEMO_API_KEY
    return protocol._digest(text, DEMO_API_KEY, sign_type)


async def pay(client, base, no, sign_type="MD5", pay_extra=None, **overrides):
    """unifiedorder + /sim/pay with pay_extra merged into the JSON: (status, reply)."""
    overrides.setdefault("notify_url", base + "/test-notify")
    prepay_id, _ = await new_order(client, base, no, sign_type, **overrides)
    body = pay_params(prepay_id, sign_type=sign_type)
    body.update(pay_extra or {})
    return await call(client, base + "/sim/pay", "POST", body)


async def pay_xml(client, base, api, fields, sign_type="MD5"):
    """POST a signed pay request; the raw answer body."""
    fields = dict(fields, appid=DEMO_APPID, mch_id=DEMO_MCH_ID, nonce_str="edge")
    if sign_type != "MD5":
        fields["sign_type"] = sign_type
    fields["sign"] = ext_sign(fields, DEMO_API_KEY, sign_type)
    resp = await client.fetch(HTTPRequest(base + api, method="POST",
                                          body=protocol.to_xml(fields)))
    return resp.body


async def orderquery(client, base, no, sign_type="MD5"):
    return await pay_xml(client, base, "/pay/orderquery", {"out_trade_no": no}, sign_type)


# --- 1. sign_type in payment notifications -------------------------------------------

@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
@pytest.mark.gen_test(timeout=10)
async def test_with_sign_type_mode_carries_a_signed_sign_type(http_client, base, app, received,
                                                              sign_type):
    status, data = await pay(http_client, base, "S1", sign_type)
    assert status == 200, data
    assert await wait_for(lambda: received, NOTE_WAIT)
    ordinary = fields_of(received[0])
    assert "sign_type" not in ordinary and verified(ordinary, sign_type)     # probability 0
    status, data = await call(http_client, base + "/sim/orders/S1/notify", "POST",
                              {"mode": "with_sign_type"})
    assert status == 200, data
    assert [a["mode"] for a in data["attempts"]] == ["with_sign_type"]
    assert data["attempts"][0]["sign_type_field"] is True
    assert data["attempts"][0]["forged"] is False
    note = fields_of(received[-1])
    assert note["sign_type"] == sign_type
    assert verified(note, sign_type)
    # a receiver that drops sign_type before verifying computes another sign
    dropped = {k: v for k, v in note.items() if k != "sign_type"}
    assert not verified(dropped, sign_type)
    assert {k: v for k, v in note.items() if k not in ("sign", "sign_type", "nonce_str")} == \
        {k: v for k, v in ordinary.items() if k not in ("sign", "nonce_str")}


@pytest.mark.gen_test(timeout=10)
async def test_with_sign_type_needs_a_paid_order(http_client, base, app):
    await new_order(http_client, base, "S2", notify_url=base + "/test-notify")
    status, data = await call(http_client, base + "/sim/orders/S2/notify", "POST",
                              {"mode": "with_sign_type"})
    assert status == 409 and data["error"]["code"] == "NOT_PAID"


@pytest.mark.parametrize("sign_type_probability", [1.0])
@pytest.mark.gen_test(timeout=10)
async def test_probability_one_puts_sign_type_in_ordinary_deliveries(http_client, base, app,
                                                                      received):
    await pay(http_client, base, "S3", "HMAC-SHA256")
    assert await wait_for(lambda: received, NOTE_WAIT)
    note = fields_of(received[0])
    assert note["sign_type"] == "HMAC-SHA256" and verified(note, "HMAC-SHA256")
    status, data = await call(http_client, base + "/sim/notifications?out_trade_no=S3")
    assert data["notifications"][0]["mode"] == "auto"
    assert data["notifications"][0]["sign_type_field"] is True


def test_probability_draws_are_seeded_and_zero_draws_nothing():
    def draws(state, n=40):
        return [state.draw_notify_sign_type() for _ in range(n)]

    state = State(SimConfig.demo(), seed=3, notify_sign_type_probability=0.5)
    first = draws(state)
    assert 5 < sum(first) < 35
    state.reset()
    assert draws(state) == first                       # the same seed, the same deliveries
    never = State(SimConfig.demo(), seed=3)
    before = never.random.getstate()
    assert not any(draws(never)) and never.random.getstate() == before   # faults unchanged
    with pytest.raises(ValueError):
        State(SimConfig.demo(), notify_sign_type_probability=1.5)


def test_notify_sign_type_probability_flag(capsys):
    assert run_simulator.parse_args([]).notify_sign_type_probability == 0
    args = run_simulator.parse_args(["--notify-sign-type-probability", "0.25"])
    assert args.notify_sign_type_probability == 0.25
    for bad in ("1.5", "-0.1", "often"):
        with pytest.raises(SystemExit):
            run_simulator.parse_args(["--notify-sign-type-probability", bad])
    assert "0..1" in capsys.readouterr().err
    banner = run_simulator.banner("http://x", SimConfig.demo(), 1.0,
                                  notify_sign_type_probability=0.25)
    assert "0.25 of payment notifications carry a signed sign_type" in banner
    assert "sign_type" not in run_simulator.banner("http://x", SimConfig.demo(), 1.0)


# --- 2. device_info ------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_device_info_is_echoed_in_notification_and_orderquery(http_client, base, app,
                                                                    received):
    status, data = await pay(http_client, base, "D1", "HMAC-SHA256", device_info="WEB-7")
    assert status == 200, data
    assert await wait_for(lambda: received, NOTE_WAIT)
    note = fields_of(received[0])
    assert note["device_info"] == "WEB-7" and verified(note, "HMAC-SHA256")
    answer = fields_of(await orderquery(http_client, base, "D1", "HMAC-SHA256"))
    assert answer["device_info"] == "WEB-7" and verified(answer, "HMAC-SHA256")
    status, order = await call(http_client, base + "/sim/orders/D1")
    assert order["device_info"] == "WEB-7"


# --- 3. empty fields -----------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_orderquery_carries_empty_attach_and_device_info_unsigned(http_client, base, app,
                                                                        received):
    await new_order(http_client, base, "E1", notify_url=base + "/test-notify")
    for paid in (False, True):
        body = await orderquery(http_client, base, "E1")
        assert raw_value(body, "attach") == "cdata:"
        assert raw_value(body, "device_info") == "cdata:"
        answer = fields_of(body)
        assert answer["trade_state"] == ("SUCCESS" if paid else "NOTPAY")
        assert verified(answer)
        assert answer["sign"] != signed_with_empty_values(answer)   # signing empties is caught
        if not paid:
            status, order = await call(http_client, base + "/sim/orders/E1")
            _, data = await call(http_client, base + "/sim/pay", "POST",
                                 pay_params(order["prepay_id"]))
    # filled ones are signed
    await new_order(http_client, base, "E2", attach="cart-2", device_info="POS1",
                    notify_url=base + "/test-notify")
    answer = fields_of(await orderquery(http_client, base, "E2"))
    assert (answer["attach"], answer["device_info"]) == ("cart-2", "POS1") and verified(answer)


@pytest.mark.gen_test(timeout=10)
async def test_closeorder_answer_carries_empty_result_msg_unsigned(http_client, base, app):
    await new_order(http_client, base, "E3")
    body = await pay_xml(http_client, base, "/pay/closeorder", {"out_trade_no": "E3"},
                         "HMAC-SHA256")
    assert raw_value(body, "result_msg") == "cdata:"
    answer = fields_of(body)
    assert answer["result_code"] == "SUCCESS" and verified(answer, "HMAC-SHA256")
    assert answer["sign"] != signed_with_empty_values(answer, "HMAC-SHA256")
    assert answer["appid"] == DEMO_APPID and answer["mch_id"] == DEMO_MCH_ID


# --- 4. coupons ----------------------------------------------------------------------

@pytest.mark.parametrize("coupon_type, settlement", [(None, "100"), ("CASH", "100"),
                                                     ("NO_CASH", "70")])
@pytest.mark.gen_test(timeout=10)
async def test_coupon_payment_fields_in_notification_and_orderquery(
        http_client, base, app, received, coupon_type, settlement):
    extra = {"coupon_fee": 30}
    if coupon_type:
        extra["coupon_type"] = coupon_type
    status, data = await pay(http_client, base, "K1", "HMAC-SHA256", extra)
    assert status == 200, data
    assert await wait_for(lambda: received, NOTE_WAIT)
    expected = {"total_fee": "100", "cash_fee": "70", "coupon_fee": "30", "coupon_count": "1",
                "coupon_type_0": coupon_type or "CASH", "coupon_fee_0": "30",
                "settlement_total_fee": settlement}
    note = fields_of(received[0])
    answer = fields_of(await orderquery(http_client, base, "K1", "HMAC-SHA256"))
    for fields in (note, answer):
        assert {k: fields.get(k) for k in expected} == expected
        assert re.fullmatch(r"[0-9]{10}", fields["coupon_id_0"])
        assert verified(fields, "HMAC-SHA256")
    assert note["coupon_id_0"] == answer["coupon_id_0"]
    for name in ("total_fee", "cash_fee", "coupon_fee", "coupon_fee_0", "coupon_count",
                 "settlement_total_fee"):
        assert raw_value(received[0], name) == "bare:" + expected[name]
    assert raw_value(received[0], "coupon_type_0") == "cdata:" + expected["coupon_type_0"]
    status, order = await call(http_client, base + "/sim/orders/K1")
    assert (order["coupon_fee"], order["cash_fee"], order["coupon_type"]) == \
        (30, 70, coupon_type or "CASH")


@pytest.mark.gen_test(timeout=10)
async def test_cash_payment_has_no_coupon_fields(http_client, base, app, received):
    await pay(http_client, base, "K2")
    assert await wait_for(lambda: received, NOTE_WAIT)
    note = fields_of(received[0])
    assert note["cash_fee"] == note["total_fee"] == "100"
    assert not [k for k in note if k.startswith(("coupon", "settlement"))]


@pytest.mark.parametrize("extra", [{"coupon_fee": 0}, {"coupon_fee": 100}, {"coupon_fee": 101},
                                   {"coupon_fee": "30"}, {"coupon_fee": 1.5},
                                   {"coupon_fee": True}, {"coupon_fee": -1},
                                   {"coupon_fee": 30, "coupon_type": "GIFT"},
                                   {"coupon_type": "CASH"}])
@pytest.mark.gen_test(timeout=10)
async def test_bad_coupon_is_400_and_leaves_the_order_unpaid(http_client, base, app, extra):
    status, data = await pay(http_client, base, "K3", pay_extra=extra)
    assert status == 400 and data["errMsg"].startswith("requestPayment:fail coupon_"), data
    status, order = await call(http_client, base + "/sim/orders/K3")
    assert order["trade_state"] == "NOTPAY"
    status, data = await call(http_client, base + "/sim/orders/K3/phone", "POST",
                              dict(extra, result="SUCCESS"))
    assert status == 400 and data["error"]["code"] == "BAD_FIELD", data
    assert "coupon_" in data["error"]["message"]


@pytest.mark.gen_test(timeout=10)
async def test_console_phone_pays_with_a_coupon(http_client, base, app, received):
    await new_order(http_client, base, "K4", notify_url=base + "/test-notify", total_fee="2")
    status, data = await call(http_client, base + "/sim/orders/K4/phone", "POST",
                              {"result": "SUCCESS", "coupon_fee": 1, "coupon_type": "NO_CASH"})
    assert status == 200, data
    assert data["order"]["cash_fee"] == 1 and data["order"]["settlement_total_fee"] == 1
    assert await wait_for(lambda: received, NOTE_WAIT)
    note = fields_of(received[0])
    assert (note["total_fee"], note["cash_fee"], note["coupon_fee_0"]) == ("2", "1", "1")
    assert verified(note)


@pytest.mark.gen_test(timeout=10)
async def test_wrong_amount_forgery_of_a_coupon_payment_is_still_consistent(http_client, base,
                                                                            app, received):
    await pay(http_client, base, "K5", pay_extra={"coupon_fee": 10, "coupon_type": "NO_CASH"})
    assert await wait_for(lambda: received, NOTE_WAIT)
    await call(http_client, base + "/sim/orders/K5/notify", "POST", {"mode": "wrong_amount"})
    forged = fields_of(received[-1])
    assert (forged["total_fee"], forged["cash_fee"], forged["settlement_total_fee"]) == \
        ("101", "91", "91")
    assert verified(forged)


# --- 5. CDATA as WeChat writes it ----------------------------------------------------

def test_to_xml_leaves_only_integer_amount_fields_bare():
    body = protocol.to_xml({
        "total_fee": "100", "cash_fee": "90", "coupon_fee": "10", "coupon_fee_0": "10",
        "coupon_count": "1", "settlement_total_fee": "100", "refund_fee": "5",
        "refund_fee_3": "5", "refund_count": "1", "nonce_str": "12345", "out_trade_no": "20240101",
        "transaction_id": "4200000000000000000000000000", "time_end": "20240101120000",
        "attach": "", "coupon_id_0": "2000000001", "total_fee_odd": "7"})
    bare = {"total_fee", "cash_fee", "coupon_fee", "coupon_fee_0", "coupon_count",
            "settlement_total_fee", "refund_fee", "refund_fee_3", "refund_count"}
    for name, value in protocol.parse_xml(body).items():
        kind = "bare:" if name in bare else "cdata:"
        assert raw_value(body, name) == kind + value, name
    # a non-digit value in an amount field still cannot break the XML
    assert raw_value(protocol.to_xml({"total_fee": "1<2"}), "total_fee") == "cdata:1<2"


@pytest.mark.gen_test(timeout=10)
async def test_answers_and_notifications_wrap_strings_in_cdata(http_client, base, app,
                                                               received):
    status, _ = await pay(http_client, base, "123456", attach="42")
    assert status == 200
    assert await wait_for(lambda: received, NOTE_WAIT)
    query = await orderquery(http_client, base, "123456")
    for body in (received[0], query):
        for name in ("out_trade_no", "attach", "transaction_id", "time_end", "nonce_str",
                     "sign", "return_code", "appid", "mch_id"):
            assert raw_value(body, name).startswith("cdata:"), (name, body)
        for name in ("total_fee", "cash_fee"):
            assert raw_value(body, name) == "bare:100", (name, body)
        assert raw_value(body, "out_trade_no") == "cdata:123456"
        assert raw_value(body, "attach") == "cdata:42"
    status, order = await call(http_client, base + "/sim/orders/123456")
    body = await pay_xml(http_client, base, "/secapi/pay/refund",
                         {"out_trade_no": "123456", "out_refund_no": "9", "total_fee": "100",
                          "refund_fee": "40"})
    for name, value in (("refund_fee", "40"), ("total_fee", "100"), ("cash_fee", "100"),
                        ("coupon_refund_fee", "0")):
        assert raw_value(body, name) == "bare:" + value, (name, body)
    assert raw_value(body, "out_refund_no") == "cdata:9"
    assert json.loads(json.dumps(order))["out_trade_no"] == "123456"
