"""The backend's /wechat/pay/notify against notifications the test forges itself."""
import dataclasses

import pytest

from server.wechat.v2 import wire as wxpay
from server.service.orders import cut_utf8, new_out_trade_no
from server.domain import NOTPAY, SUCCESS
from tests.support.api import notification, post_notify, signed, unpaid_order

pytestmark = pytest.mark.gen_test(timeout=20)


@pytest.mark.parametrize("sign_type", ["HMAC-SHA256"])
async def test_md5_signature_on_hmac_order_is_a_refused_downgrade(http_client, base_url, sim, app, sign_type):
    order = await unpaid_order(http_client, base_url, sim)
    for body in (signed(notification(order), sign_type="MD5"),
                 signed(notification(order, sign_type="MD5"), sign_type="MD5")):
        status, reply = await post_notify(http_client, base_url, body)
        assert reply["return_code"] == "FAIL"
    assert (await app.service.store.get_order(order["out_trade_no"])).status == NOTPAY
    status, reply = await post_notify(http_client, base_url, signed(notification(order), sign_type="HMAC-SHA256"))
    assert reply["return_code"] == "SUCCESS"
    assert (await app.service.store.get_order(order["out_trade_no"])).status == SUCCESS


@pytest.mark.parametrize("forge", [
    lambda o: signed(notification(o), key="0" * 32),
    lambda o: signed(notification(o, appid="wx0000000000000000")),
    lambda o: signed(notification(o, mch_id="99999999")),
    lambda o: signed(notification(o, total_fee="1")),
    lambda o: signed(notification(o, out_trade_no="NOSUCHORDER")),
    lambda o: signed(notification(o, transaction_id="")),
    lambda o: wxpay.to_xml(notification(o)),
    lambda o: signed(notification(o, result_code="FAIL", err_code="NOTENOUGH")),
    lambda o: signed(notification(o, return_code="FAIL")),
    lambda o: b"<xml><not-closed>",
], ids=["other-key", "appid", "mch_id", "amount", "unknown-order", "no-transaction", "unsigned",
        "result-fail", "return-fail", "garbage"])
async def test_forgeries_never_mark_paid(http_client, base_url, sim, app, forge):
    order = await unpaid_order(http_client, base_url, sim)
    status, reply = await post_notify(http_client, base_url, forge(order))
    stored = await app.service.store.get_order(order["out_trade_no"])
    assert stored.status == NOTPAY and stored.transaction_id is None
    assert await app.service.store.events(order["out_trade_no"]) == [(None, NOTPAY, "create")]


@pytest.mark.parametrize("forge", [
    lambda o: signed(notification(o), key="0" * 32),
    lambda o: signed(notification(o, appid="wx0000000000000000")),
    lambda o: signed(notification(o), sign_type="HMAC-SHA256"),
], ids=["other-key", "appid", "sign-type"])
async def test_a_refused_notification_is_logged_with_its_order(http_client, base_url, sim, app, caplog, forge):
    # the operator looking into a forged notification is told which order it was about
    order = await unpaid_order(http_client, base_url, sim)
    with caplog.at_level("WARNING", logger="server.service"):
        assert (await post_notify(http_client, base_url, forge(order)))[1]["return_code"] == "FAIL"
    refused = [r.getMessage() for r in caplog.records if r.name == "server.service" and "refused" in r.getMessage()]
    assert len(refused) == 1 and order["out_trade_no"] in refused[0], refused


async def test_repeat_answers_success_and_other_transaction_is_refused(http_client, base_url, sim, app):
    order = await unpaid_order(http_client, base_url, sim)
    body = signed(notification(order))
    for _ in range(3):
        assert (await post_notify(http_client, base_url, body))[1]["return_code"] == "SUCCESS"
    other = signed(notification(order, transaction_id="4200009999202611260000000009"))
    assert (await post_notify(http_client, base_url, other))[1]["return_code"] == "FAIL"
    stored = await app.service.store.get_order(order["out_trade_no"])
    assert stored.transaction_id == "4200001234202611260000000001"
    assert len(await app.service.store.events(order["out_trade_no"])) == 2


async def test_a_v3_order_is_v3_by_its_pay_version_not_its_sign_type(http_client, base_url, sim, app):
    """An order made under v3 is paid through v3: a v2 payment notification for it is refused,
    even when the order's sign type is one a v2 notification could be verified with."""
    from server.domain import PAY_V3
    made = await app.service.store.get_order((await unpaid_order(http_client, base_url, sim))["out_trade_no"])
    v3 = dataclasses.replace(made, out_trade_no="V3ORDER" + made.out_trade_no[7:], pay_version=PAY_V3,
                             sign_type="MD5", prepay_id=None, idempotency_key=None)
    await app.service.store.insert_order(v3)
    order = {"out_trade_no": v3.out_trade_no, "total_fee": v3.total_fee}
    assert (await post_notify(http_client, base_url, signed(notification(order))))[1]["return_code"] == "FAIL"
    assert (await app.service.store.get_order(v3.out_trade_no)).status == NOTPAY


def test_out_trade_no_shape():
    numbers = {new_out_trade_no(1764158400.0) for _ in range(1000)}
    assert len(numbers) == 1000
    assert all(len(n) == 32 and n.isalnum() and n.startswith("20251126") for n in numbers)


def test_body_cut_on_character_boundary():
    assert cut_utf8("中" * 50, 127) == "中" * 42  # 126 bytes; the 43rd character would split
    assert cut_utf8("abc", 127) == "abc"
    assert len(cut_utf8("a" + "中" * 60, 127).encode("utf-8")) <= 127
