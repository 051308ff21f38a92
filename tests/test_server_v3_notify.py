"""The backend in v3 mode, in process, against the simulator: the Mini Program's API
unchanged (only signType/paySign differ), the v3 notify endpoint (verified before anything,
probes and replays refused, one transition, 200 only after the commit) and refunds."""
import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from server.domain import CLOSED, NOTPAY, REFUND, SUCCESS
from tests.support import ADMIN_TOKEN
from simulator.v3 import wire as protocol3
from simulator.models import beijing
from tests.support.api import call, wait_for, wx_login
from tests.support.server3 import (APPID, MCHID, MERCHANT_PUBLIC_KEY, app3, delivered, key_mode,  # noqa: F401
                                   notification, other_key, pay_lost, refund_notice, sim3, sim3_dir,
                                   transaction)

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
PAY_PATH, REFUND_PATH = "/wechat/pay/v3/notify", "/wechat/refund/v3/notify"


@pytest.fixture
def app(app3):
    return app3


async def login(http_client, base_url, sim, user="alice"):
    code = await wx_login(http_client, sim, user)
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": code})
    assert status == 200, data
    return {"Authorization": "Bearer " + data["token"]}


async def unpaid(http_client, base_url, sim, product="coffee", quantity=1):
    auth = await login(http_client, base_url, sim)
    status, order = await call(http_client, "POST", base_url + "/api/orders",
                               {"product_id": product, "quantity": quantity}, auth)
    assert status == 201, order
    return auth, order


async def post(http_client, base_url, headers, body, path=PAY_PATH):
    r = await http_client.fetch(base_url + path, method="POST", body=body, raise_error=False,
                                headers=dict(headers, **{"Content-Type": "application/json"}))
    return r.code, json.loads(r.body) if r.body else None


async def stored(app, no):
    return await app.service.store.get_order(no)


def sim_order(sim, no):
    return sim.state.orders[(MCHID, no)]


async def sim_pay(http_client, sim, payment):
    """The phone: wx.requestPayment at the simulator, which then notifies."""
    return await call(http_client, "POST", sim.url + "/sim/pay", dict(payment, appid=APPID))


def paysign_verifies(payment):
    message = "%s\n%s\n%s\n%s\n" % (APPID, payment["timeStamp"], payment["nonceStr"], payment["package"])
    try:
        MERCHANT_PUBLIC_KEY.verify(base64.b64decode(payment["paySign"]), message.encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
    except Exception:
        return False
    return True


@pytest.mark.parametrize("key_mode", ["public-key", "certificate"])
async def test_mini_program_flow_in_v3(http_client, base_url, sim3, app, key_mode):
    auth, order = await unpaid(http_client, base_url, sim3, "coffee", 2)
    assert order["status"] == NOTPAY and order["total_fee"] == 2400
    payment = order["payment"]
    assert set(payment) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert payment["signType"] == "RSA" and payment["package"].startswith("prepay_id=wx") and paysign_verifies(payment)
    status, again = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % order["out_trade_no"],
                               headers=auth)
    assert status == 200 and again["payment"]["package"] == payment["package"] and paysign_verifies(again["payment"])
    status, paid = await sim_pay(http_client, sim3, payment)                              # the phone
    assert status == 200 and paid["errMsg"] == "requestPayment:ok"
    no = order["out_trade_no"]

    async def is_paid():
        return (await stored(app, no)).status == SUCCESS
    await wait_for(is_paid)
    await delivered(sim3.state, out_trade_no=no, kind="payment")
    status, view = await call(http_client, "GET", base_url + "/api/orders/" + no, headers=auth)
    assert status == 200 and view["status"] == SUCCESS and view["transaction_id"] == paid["transaction_id"]
    assert view["paid_at"] == protocol3.rfc3339(sim_order(sim3, no).paid_at)
    assert await app.service.store.events(no) == [(None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]
    notified = [(r["url"], r["status"]) for r in sim3.state.notifications if r["out_trade_no"] == no]
    assert notified == [(sim_order(sim3, no).request["notify_url"], 200)]
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/close" % no, headers=auth)
    assert status == 409 and data["error"]["code"] == "ORDER_PAID"


async def test_close_and_a_lost_notification_recovered_by_query(http_client, base_url, sim3, app):
    auth, first = await unpaid(http_client, base_url, sim3)
    status, view = await call(http_client, "POST", base_url + "/api/orders/%s/close" % first["out_trade_no"],
                              headers=auth)
    assert status == 200 and view["status"] == CLOSED and sim_order(sim3, first["out_trade_no"]).trade_state == "CLOSED"
    _, second = await unpaid(http_client, base_url, sim3)
    no = second["out_trade_no"]
    pay_lost(sim3.state, no)                                      # paid, its notification lost
    status, view = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % no, headers=auth)
    assert status == 200 and view["status"] == SUCCESS and view["paid_at"] == protocol3.rfc3339(
        sim_order(sim3, no).paid_at)
    assert (await app.service.store.events(no))[-1] == (NOTPAY, SUCCESS, "orderquery")
    # the notification arriving late changes nothing and is answered 200 so WeChat stops
    status, answer = await post(http_client, base_url, *notification(transaction(sim3.state, no)))
    assert status == 200 and answer["code"] == "SUCCESS"
    assert len(await app.service.store.events(no)) == 2


async def test_redelivery_is_200_without_a_second_transition_and_a_replay_is_refused(http_client, base_url, sim3, app):
    _, order = await unpaid(http_client, base_url, sim3)
    no = order["out_trade_no"]
    resource = transaction(sim3.state, no, transaction_id="4200000000000000000000000042")
    first = notification(resource, event_id="EV-1")
    assert (await post(http_client, base_url, *first))[0] == 200
    assert (await stored(app, no)).status == SUCCESS
    for _ in range(3):   # WeChat's retries: the same id, each signed afresh (timestamp, nonce)
        status, answer = await post(http_client, base_url, *notification(resource, event_id="EV-1"))
        assert (status, answer) == (200, {"code": "SUCCESS", "message": "OK"})
    status, answer = await post(http_client, base_url, *first)   # the very same message again
    assert status == 401 and answer["code"] == "FAIL" and "replayed" in answer["message"]
    assert await app.service.store.events(no) == [(None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]
    other = notification(transaction(sim3.state, no, transaction_id="4200000000000000000000000099"))
    assert (await post(http_client, base_url, *other))[0] == 400    # another transaction for a paid order
    assert (await stored(app, no)).transaction_id == "4200000000000000000000000042"


def forgeries(state):
    def tx(o, **overrides):
        return transaction(state, o["out_trade_no"], **overrides)

    def amount(o, total, currency="CNY"):
        return {"total": total, "payer_total": total, "currency": currency, "payer_currency": currency}

    probe = lambda o: notification(tx(o))  # noqa: E731
    return {
        "other-key": lambda o: notification(tx(o), key=other_key()),
        "stale-timestamp": lambda o: notification(tx(o), timestamp=int(time.time()) - 301),
        "future-timestamp": lambda o: notification(tx(o), timestamp=int(time.time()) + 400),
        "unknown-serial": lambda o: notification(tx(o), serial="PUB_KEY_ID_0119000000012026120200000000000999"),
        "signtest-probe": lambda o: (dict(probe(o)[0], **{"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" +
                                                          probe(o)[0]["Wechatpay-Signature"]}), probe(o)[1]),
        "signature-type": lambda o: notification(tx(o), signature_type="WECHATPAY2-SM2-WITH-SM3"),
        "no-signature-type": lambda o: notification(tx(o), signature_type=None),
        "wrong-amount": lambda o: notification(tx(o, amount=amount(o, 1))),
        # not a payment (nothing would be recorded), but not the order's amount either
        "wrong-amount-not-paid": lambda o: notification(tx(o, paid=False, amount=amount(o, 1))),
        "wrong-currency": lambda o: notification(tx(o, amount=amount(o, o["total_fee"], "USD"))),
        "wrong-mchid": lambda o: notification(tx(o, mchid="1900000001")),
        "wrong-appid": lambda o: notification(tx(o, appid="wx0000000000000000")),
        "other-apiv3-key": lambda o: notification(tx(o), apiv3_key="x" * 32),
        "unknown-order": lambda o: notification(tx(o, out_trade_no="NOSUCHORDER")),
        "no-transaction-id": lambda o: notification(tx(o, transaction_id="")),
        "body-changed": lambda o: (probe(o)[0], probe(o)[1].replace(b'"EV-', b'"EX-')),
    }


@pytest.mark.parametrize("forge", list(forgeries(None)))
async def test_forged_notifications_refused_nothing_stored(http_client, base_url, sim3, app, forge):
    _, order = await unpaid(http_client, base_url, sim3)
    headers, body = forgeries(sim3.state)[forge](order)
    status, answer = await post(http_client, base_url, headers, body)
    assert status in (400, 401) and answer["code"] == "FAIL" and answer["message"], (status, answer)
    if forge in ("other-key", "stale-timestamp", "unknown-serial", "signtest-probe", "body-changed"):
        assert status == 401
    no = order["out_trade_no"]
    assert (await stored(app, no)).status == NOTPAY and (await stored(app, no)).transaction_id is None
    assert await app.service.store.events(no) == [(None, NOTPAY, "create")]


async def settle(http_client, sim, out_refund_no, status):
    """The simulator settles the refund now and notifies (its first notification): the
    backend's answer's status."""
    code, data = await call(http_client, "POST", sim.url + "/sim/refunds/" + out_refund_no, {"status": status})
    assert code == 200, data
    return (await delivered(sim.state, out_refund_no=out_refund_no))["status"]


async def resend(http_client, sim, out_refund_no):
    """The simulator sends the refund's notification again: the backend's answer's status."""
    code, data = await call(http_client, "POST", sim.url + "/sim/refunds/%s/notify" % out_refund_no, {"count": 1})
    assert code == 200, data
    return data["attempts"][0]["status"]


async def test_refunds_with_their_notifications(http_client, base_url, sim3, app):
    _, order = await unpaid(http_client, base_url, sim3, "cake")   # 2600 fen
    no = order["out_trade_no"]
    assert (await sim_pay(http_client, sim3, order["payment"]))[0] == 200
    assert (await delivered(sim3.state, out_trade_no=no, kind="payment"))["status"] == 200

    async def refund(fee, out_refund_no):
        status, data = await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % no,
                                  {"refund_fee": fee, "out_refund_no": out_refund_no}, ADMIN)
        assert status == 202 and data["status"] == "PROCESSING", data
        assert sim3.state.refunds[(MCHID, out_refund_no)].notify_url.endswith(REFUND_PATH)
        return data

    await refund(1000, "RF-A")
    # forged refund notifications: nothing moves
    def notice(status="SUCCESS", refund=1000, total=2600, **overrides):
        amounts = {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund}
        return refund_notice(sim3.state, "RF-A", status, amount=amounts, **overrides)
    wrong = [notification(notice(refund=9999), "REFUND.SUCCESS"),
             notification(notice(total=1), "REFUND.SUCCESS"),
             notification(notice(mchid="1900000001"), "REFUND.SUCCESS"),
             notification(notice("CLOSED"), "REFUND.SUCCESS"),
             notification(notice(out_trade_no="OTHER"), "REFUND.SUCCESS"),
             notification(notice(), "REFUND.SUCCESS", key=other_key())]
    for headers, body in wrong:
        status, answer = await post(http_client, base_url, headers, body, REFUND_PATH)
        assert status in (400, 401) and answer["code"] == "FAIL"
    assert (await app.service.store.get_refund("RF-A")).status == "PROCESSING"
    assert await settle(http_client, sim3, "RF-A", "SUCCESS") == 200
    refund_a = await app.service.store.get_refund("RF-A")
    settled_at = sim3.state.refunds[(MCHID, "RF-A")].settled_at
    assert refund_a.status == SUCCESS and refund_a.success_time == beijing(settled_at, "%Y-%m-%d %H:%M:%S")
    assert (await stored(app, no)).status == REFUND
    assert await resend(http_client, sim3, "RF-A") == 200           # redelivered: 200, nothing moves
    assert await app.service.store.refund_events("RF-A") == [
        (None, "PENDING", "create"), ("PENDING", "PROCESSING", "refund"), ("PROCESSING", SUCCESS, "notify")]
    await refund(500, "RF-B")
    assert await settle(http_client, sim3, "RF-B", "REFUNDCLOSE") == 200
    assert (await app.service.store.get_refund("RF-B")).status == "REFUNDCLOSE"
    await refund(600, "RF-C")
    # the payment path takes refund notifications too (one URL may be configured for both)
    headers, body = notification(refund_notice(sim3.state, "RF-C", "ABNORMAL"), "REFUND.ABNORMAL")
    assert (await post(http_client, base_url, headers, body, PAY_PATH))[0] == 200
    assert (await app.service.store.get_refund("RF-C")).status == "CHANGE"
    await refund(700, "RF-D")                                         # its notification is lost
    sim3.state.refunds[(MCHID, "RF-D")].notify_url = ""            # so the settled refund is not notified
    assert (await call(http_client, "POST", sim3.url + "/sim/refunds/RF-D", {"status": "SUCCESS"}))[0] == 200
    status, view = await call(http_client, "GET", base_url + "/admin/orders/%s?refresh=1" % no, headers=ADMIN)
    assert status == 200 and {r["out_refund_no"]: r["status"] for r in view["refunds"]} == {
        "RF-A": SUCCESS, "RF-B": "REFUNDCLOSE", "RF-C": "CHANGE", "RF-D": SUCCESS}
    assert view["refunded_fee"] == 1700 and view["refundable_fee"] == 2600 - 1000 - 600 - 700


async def test_v2_notifications_refused_in_v3_mode(http_client, base_url, sim3, app):
    """No v2 API key is configured: nothing may verify with an empty one, not even for an
    order made under v2 before the switch."""
    import time
    from server.wechat.v2 import wire as wxpay
    from server.domain import Order
    old, _ = await app.service.store.insert_order(Order(
        out_trade_no="V2ORDERBEFORETHESWITCH", openid="o-alice", product_id="tea", quantity=1, body="Tea",
        total_fee=800, sign_type="MD5", status=NOTPAY, created_at=time.time(), updated_at=time.time()))
    _, order = await unpaid(http_client, base_url, sim3)
    for no, fee in ((old.out_trade_no, 800), (order["out_trade_no"], order["total_fee"])):
        fields = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": APPID, "mch_id": "10000100",
                  "out_trade_no": no, "total_fee": str(fee), "transaction_id": "4200000000000000000000000001",
                  "nonce_str": "n"}
        r = await http_client.fetch(base_url + "/wechat/pay/notify", method="POST", raise_error=False,
                                    body=wxpay.signed_xml(fields, ""))
        assert wxpay.from_xml(r.body)["return_code"] == "FAIL"
        assert (await stored(app, no)).status == NOTPAY
    r = await http_client.fetch(base_url + "/wechat/refund/notify", method="POST", raise_error=False,
                                body=wxpay.to_xml({"return_code": "SUCCESS", "appid": APPID, "mch_id": "10000100",
                                                   "req_info": "AAAA"}))
    assert wxpay.from_xml(r.body)["return_code"] == "FAIL"


async def test_notify_endpoint_edges(http_client, base_url, sim3, app):
    status, answer = await post(http_client, base_url, {}, b"{}")
    assert status == 401 and answer["code"] == "FAIL"
    status, answer = await post(http_client, base_url, {}, b"x" * (64 * 1024 + 1))
    assert status == 413 and answer["code"] == "FAIL"
    headers, body = notification({"anything": 1}, "COUPON.USE")       # a genuine event we do not handle
    assert (await post(http_client, base_url, headers, body))[0] == 200
    _, order = await unpaid(http_client, base_url, sim3)
    headers, body = notification(transaction(sim3.state, order["out_trade_no"]))
    app.service.store.get_order = _broken                               # the database fails: WeChat retries
    status, answer = await post(http_client, base_url, headers, body)
    assert status == 503 and answer == {"code": "FAIL", "message": "temporarily unable to process"}


async def _broken(no):
    from server.store import StoreError
    raise StoreError("database is down")


async def test_the_v2_path_of_a_v2_backend_is_not_v3(http_client, base_url, sim3, app):
    """A v2 backend answers its v3 notify path 404 FAIL (its client opens no v3 notification)."""
    from server.config import Config
    from server.wechat import NotificationRefused
    from server.wechat.v2.client import WeChatClient
    client = WeChatClient(Config(appid=APPID, app_secret="8a2f3c4d5e6f70819a0b1c2d3e4f5061", mch_id="10000100",
                                 api_key="192006250b4c09247ec02edce69f6a2d",
                                 notify_url="http://127.0.0.1:8000/wechat/pay/notify"))
    try:
        with pytest.raises(NotificationRefused) as info:
            await client.open_notification({}, b"{}")
        assert info.value.status == 404
    finally:
        client.close()
