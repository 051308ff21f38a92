"""Refunds in process: admin API, local amount checks, refund notifications, refundquery."""
import asyncio
import base64
import hashlib

import pytest

from server.wechat.v2 import wire as wxpay
from server.domain import REFUND, SUCCESS, Refund
from server.store import StoreError
from tests.support import ADMIN_TOKEN, DEMO
from tests.support.api import call, create, login, paid_in_store, pay, wait_for

pytestmark = pytest.mark.gen_test(timeout=30)


@pytest.fixture
def backend_overrides():
    return {"timeout": 1.0}
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
FAIL_REPLY = b"<xml><return_code>FAIL</return_code></xml>"


async def paid_order(http_client, base_url, sim, app, product="cake"):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, {"product_id": product})
    await pay(http_client, sim, order["payment"])
    await paid_in_store(app, order["out_trade_no"])
    return auth, order["out_trade_no"]


async def refund(http_client, base_url, no, body, headers=ADMIN):
    return await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % no, body, headers)


async def admin_view(http_client, base_url, no, refresh=False):
    status, data = await call(http_client, "GET", base_url + "/admin/orders/%s%s" % (no, "?refresh=1" if refresh else ""),
                              headers=ADMIN)
    assert status == 200, data
    return data


async def settled(app, out_refund_no, status=SUCCESS):
    async def check():
        return (await app.service.store.get_refund(out_refund_no)).status == status
    await wait_for(check, 10)


async def sim_refund_calls(http_client, sim):
    _, data = await call(http_client, "GET", sim.url + "/sim/requests")
    return [r for r in data["requests"] if r["api"] == "/secapi/pay/refund"]


async def test_partial_then_rest_then_refused_locally(http_client, base_url, sim, app):
    auth, no = await paid_order(http_client, base_url, sim, app)
    status, first = await refund(http_client, base_url, no, {"refund_fee": 1000, "reason": "少了一块"})
    assert status == 202 and first["status"] == "PROCESSING" and first["refund_id"]
    await settled(app, first["out_refund_no"])
    status, view = await call(http_client, "GET", base_url + "/api/orders/" + no, headers=auth)
    assert view["status"] == REFUND and view["refunded_fee"] == 1000
    status, rest = await refund(http_client, base_url, no, {"refund_fee": 1600})
    assert status == 202
    await settled(app, rest["out_refund_no"])
    calls = len(await sim_refund_calls(http_client, sim))
    status, data = await refund(http_client, base_url, no, {"refund_fee": 1})
    assert status == 409 and data["error"]["code"] == "REFUND_EXCEEDS_PAID"
    assert len(await sim_refund_calls(http_client, sim)) == calls  # refused before WeChat
    admin = await admin_view(http_client, base_url, no)
    assert admin["refunded_fee"] == 2600 and admin["refundable_fee"] == 0 and len(admin["refunds"]) == 2


async def test_repeated_out_refund_no_refunds_once(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    answers = [await refund(http_client, base_url, no, {"refund_fee": 500, "out_refund_no": "RF-1"}) for _ in range(3)]
    assert {(s, d["out_refund_no"], d["refund_id"]) for s, d in answers} == {(202, "RF-1", answers[0][1]["refund_id"])}
    status, data = await refund(http_client, base_url, no, {"refund_fee": 600, "out_refund_no": "RF-1"})
    assert status == 409 and data["error"]["code"] == "REFUND_NO_CONFLICT"
    _, sim_refunds = await call(http_client, "GET", sim.url + "/sim/refunds?out_trade_no=" + no)
    assert [r["out_refund_no"] for r in sim_refunds["refunds"]] == ["RF-1"]
    assert (await admin_view(http_client, base_url, no))["refundable_fee"] == 2100


def encrypted_notification(info, api_key=DEMO["api_key"], appid=DEMO["appid"]):
    """A refund notification built with an independent AES (pycryptodome), as WeChat sends it."""
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import pad
    plain = "<root>%s</root>" % "".join("<%s><![CDATA[%s]]></%s>" % (k, v, k) for k, v in info.items())
    key = hashlib.md5(api_key.encode()).hexdigest().encode()
    req_info = base64.b64encode(AES.new(key, AES.MODE_ECB).encrypt(pad(plain.encode(), 16))).decode()
    return wxpay.to_xml({"return_code": "SUCCESS", "appid": appid, "mch_id": DEMO["mch_id"],
                         "nonce_str": wxpay.nonce(), "req_info": req_info})


async def test_refund_notifications_processed_once_and_forgeries_refused(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    real = app.service.handle_refund_notify
    lost = asyncio.Event()

    async def lose(body):
        lost.set()
        return FAIL_REPLY
    app.service.handle_refund_notify = lose
    status, r = await refund(http_client, base_url, no, {"refund_fee": 700})
    await asyncio.wait_for(lost.wait(), 10)
    rno = r["out_refund_no"]
    info = {"out_refund_no": rno, "out_trade_no": no, "refund_id": r["refund_id"], "total_fee": "2600",
            "refund_fee": "700", "refund_status": "SUCCESS", "success_time": "2026-11-26 12:00:00"}
    forgeries = [encrypted_notification(info, api_key="0" * 32), encrypted_notification(dict(info, refund_fee="7000")),
                 encrypted_notification(dict(info, total_fee="1")), encrypted_notification(dict(info, out_refund_no="R404")),
                 encrypted_notification(dict(info, out_trade_no="OTHER")), encrypted_notification(info, appid="wx0000000000000000"),
                 encrypted_notification(dict(info, refund_status="WHATEVER")), b"<xml><req_info>!!</req_info></xml>"]
    for body in forgeries:
        assert wxpay.from_xml(await real(body))["return_code"] == "FAIL"
    assert (await app.service.store.get_refund(rno)).status == "PROCESSING"
    assert wxpay.from_xml(await real(encrypted_notification(info)))["return_code"] == "SUCCESS"
    app.service.handle_refund_notify = real
    for mode in ("duplicate", "bad_key", "wrong_amount", "normal"):
        status, _ = await call(http_client, "POST", sim.url + "/sim/refunds/%s/notify" % rno, {"mode": mode, "count": 10})
        assert status == 200

    async def all_answered():
        _, data = await call(http_client, "GET", sim.url + "/sim/notifications?kind=refund&out_refund_no=" + rno)
        return len([n for n in data["notifications"] if n.get("outcome")]) >= 13
    await wait_for(all_answered, 10)
    _, data = await call(http_client, "GET", sim.url + "/sim/notifications?kind=refund&out_refund_no=" + rno)
    outcomes = {(n["mode"], n["outcome"]) for n in data["notifications"] if n.get("outcome")}
    assert {m for m, o in outcomes if o == "success"} >= {"duplicate", "normal"}
    assert {m for m, o in outcomes if o == "success"}.isdisjoint({"bad_key", "wrong_amount"})
    assert await app.service.store.refund_events(rno) == [
        (None, "PENDING", "create"), ("PENDING", "PROCESSING", "refund"), ("PROCESSING", "SUCCESS", "notify")]


async def test_refundclose_shown_as_failed_and_amount_released(http_client, base_url, sim, app):
    auth, no = await paid_order(http_client, base_url, sim, app, "tea")
    status, _ = await call(http_client, "POST", sim.url + "/sim/orders/%s/refund-outcome" % no, {"status": "REFUNDCLOSE"})
    assert status == 200
    status, r = await refund(http_client, base_url, no, {"refund_fee": 800})
    await settled(app, r["out_refund_no"], "REFUNDCLOSE")
    admin = await admin_view(http_client, base_url, no)
    assert admin["status"] == SUCCESS and admin["refunds"][0]["status"] == "REFUNDCLOSE"
    assert admin["refundable_fee"] == 800
    status, view = await call(http_client, "GET", base_url + "/api/orders/" + no, headers=auth)
    assert view["status"] == SUCCESS


async def test_lost_refund_notification_reconciled_with_refundquery(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    app.service.handle_refund_notify = lambda body: asyncio.sleep(0, FAIL_REPLY)
    status, r = await refund(http_client, base_url, no, {"refund_fee": 300})
    await call(http_client, "POST", sim.url + "/sim/refunds/%s" % r["out_refund_no"], {"status": "SUCCESS"})
    admin = await admin_view(http_client, base_url, no, refresh=True)
    assert admin["refunds"][0]["status"] == SUCCESS and admin["status"] == REFUND
    assert (await app.service.store.refund_events(r["out_refund_no"]))[-1] == ("PROCESSING", SUCCESS, "refundquery")


async def test_refund_stored_before_wechat_and_safe_to_retry(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    await call(http_client, "POST", sim.url + "/sim/faults", {"path": "/secapi/pay/refund", "kind": "status", "value": 503})
    status, data = await refund(http_client, base_url, no, {"refund_fee": 900, "out_refund_no": "RETRY-1"})
    assert status == 502
    admin = await admin_view(http_client, base_url, no)
    assert [(r["out_refund_no"], r["status"]) for r in admin["refunds"]] == [("RETRY-1", "PENDING")]
    assert admin["refundable_fee"] == 1700  # a pending refund holds its amount
    await call(http_client, "DELETE", sim.url + "/sim/faults")
    status, data = await refund(http_client, base_url, no, {"refund_fee": 900, "out_refund_no": "RETRY-1"})
    assert status == 202 and data["status"] == "PROCESSING"
    _, sim_refunds = await call(http_client, "GET", sim.url + "/sim/refunds?out_trade_no=" + no)
    assert len(sim_refunds["refunds"]) == 1


async def test_wechat_refusal_releases_the_amount_other_failures_keep_it(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    # someone refunded CLASH-1 at WeChat with another amount: WeChat will say no to ours
    clash = {"appid": DEMO["appid"], "mch_id": DEMO["mch_id"], "nonce_str": wxpay.nonce(), "out_trade_no": no,
             "out_refund_no": "CLASH-1", "total_fee": "2600", "refund_fee": "100"}
    r = await http_client.fetch(sim.url + "/secapi/pay/refund", method="POST", body=wxpay.signed_xml(clash, DEMO["api_key"]))
    assert wxpay.from_xml(r.body)["result_code"] == "SUCCESS"
    status, data = await refund(http_client, base_url, no, {"refund_fee": 200, "out_refund_no": "CLASH-1"})
    assert status == 502 and data["error"]["wechat_code"] == "REFUND_FEE_MISMATCH"
    await call(http_client, "POST", sim.url + "/sim/faults", {"path": "/secapi/pay/refund", "kind": "system_error"})
    status, data = await refund(http_client, base_url, no, {"refund_fee": 100, "out_refund_no": "SYS-1"})
    assert status == 502
    admin = await admin_view(http_client, base_url, no)
    refunds = {r["out_refund_no"]: r["status"] for r in admin["refunds"]}
    assert refunds == {"CLASH-1": "FAILED", "SYS-1": "PENDING"}  # SYSTEMERROR after retries is no definite no
    assert admin["refundable_fee"] == 2500


async def test_admin_auth_and_input_errors(http_client, base_url, sim, app):
    auth, no = await paid_order(http_client, base_url, sim, app)
    for headers in ({}, {"Authorization": "Bearer wrong-token-123456789"}, auth):
        status, data = await refund(http_client, base_url, no, {"refund_fee": 1}, headers)
        assert status == 401 and data["error"]["code"] == "UNAUTHORIZED"
        status, data = await call(http_client, "GET", base_url + "/admin/orders/" + no, headers=headers)
        assert status == 401
    for body, code in (({"refund_fee": "1"}, "INVALID_REFUND_FEE"), ({"refund_fee": 0}, "INVALID_REFUND_FEE"),
                       ({"refund_fee": 1.0}, "INVALID_REFUND_FEE"), ({}, "INVALID_REFUND_FEE"),
                       ({"refund_fee": 1, "reason": "x" * 81}, "INVALID_REASON"),
                       ({"refund_fee": 1, "out_refund_no": "有"}, "INVALID_OUT_REFUND_NO"),
                       ({"refund_fee": 1, "out_refund_no": "x" * 65}, "INVALID_OUT_REFUND_NO")):
        status, data = await refund(http_client, base_url, no, body)
        assert status == 400 and data["error"]["code"] == code
    status, data = await refund(http_client, base_url, "NOSUCHORDER", {"refund_fee": 1})
    assert status == 404
    unpaid = await create(http_client, base_url, auth)
    status, data = await refund(http_client, base_url, unpaid["out_trade_no"], {"refund_fee": 1})
    assert status == 409 and data["error"]["code"] == "ORDER_NOT_PAID"
    assert (await admin_view(http_client, base_url, no))["refunds"] == []


async def test_refund_whose_answer_was_lost_is_found_by_refundquery(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    app.service.handle_refund_notify = lambda body: asyncio.sleep(0, FAIL_REPLY)  # notifications lost too
    await call(http_client, "POST", sim.url + "/sim/faults",
               {"path": "/secapi/pay/refund", "kind": "latency", "value": 1200, "count": 1})
    status, data = await refund(http_client, base_url, no, {"refund_fee": 400})
    assert status == 504 and data["error"]["code"] == "UPSTREAM_TIMEOUT"
    rno = data["error"]["out_refund_no"]  # so the admin can retry the same refund
    assert (await app.service.store.get_refund(rno)).status == "PENDING"
    await asyncio.sleep(0.7)  # WeChat (the simulator) accepts it after its delay (1.2 s, past our 1 s timeout)
    admin = await admin_view(http_client, base_url, no, refresh=True)
    assert admin["refunds"][0]["out_refund_no"] == rno
    assert admin["refunds"][0]["status"] in ("PROCESSING", "SUCCESS")
    assert (await app.service.store.refund_events(rno))[1][2] == "refundquery"


async def sim_refunds_of(http_client, sim, no):
    _, data = await call(http_client, "GET", sim.url + "/sim/refunds?out_trade_no=" + no)
    return data["refunds"]


async def test_pending_refund_wechat_never_saw_is_sent_again_on_refresh(http_client, base_url, sim, app, clock):
    """The refund call was lost before WeChat got it: refundquery knows nothing, and the stored
    PENDING refund is sent again with the same out_refund_no instead of blocking its amount."""
    _, no = await paid_order(http_client, base_url, sim, app)
    await call(http_client, "POST", sim.url + "/sim/faults",
               {"path": "/secapi/pay/refund", "kind": "status", "value": 503, "count": 1})
    status, data = await refund(http_client, base_url, no, {"refund_fee": 400})
    assert status == 502
    rno = data["error"]["out_refund_no"]
    assert await sim_refunds_of(http_client, sim, no) == []      # WeChat never saw it
    admin = await admin_view(http_client, base_url, no, refresh=True)
    assert admin["refunds"][0]["status"] == "PENDING"           # its call may still be in flight: left alone
    clock.offset += 10                                           # every attempt of its call is over now
    admin = await admin_view(http_client, base_url, no, refresh=True)
    assert admin["refunds"][0]["status"] == "PROCESSING" and admin["refunds"][0]["out_refund_no"] == rno
    await settled(app, rno)
    status, rest = await refund(http_client, base_url, no, {"refund_fee": 2200})   # the rest is not blocked
    assert status == 202
    refunds = await sim_refunds_of(http_client, sim, no)
    assert sorted(r["refund_fee"] for r in refunds) == [400, 2200]   # each refunded once
    events = await app.service.store.refund_events(rno)
    assert events[:2] == [(None, "PENDING", "create"), ("PENDING", "PROCESSING", "refund")]


async def test_sweep_sends_again_a_refund_stored_before_a_crash(http_client, base_url, sim, app, clock):
    """The process died between storing the refund and calling WeChat: the background sweep
    finds it PENDING and unknown to WeChat, and sends it."""
    _, no = await paid_order(http_client, base_url, sim, app)
    now = clock()
    await app.service.store.insert_refund(Refund(
        out_refund_no="CRASHED-1", out_trade_no=no, refund_fee=700, reason="", status="PENDING",
        created_at=now, updated_at=now), 50)
    clock.offset += 120
    assert await app.service.sweep() == 1
    assert (await app.service.store.get_refund("CRASHED-1")).status in ("PROCESSING", SUCCESS)
    assert [(r["out_refund_no"], r["refund_fee"]) for r in await sim_refunds_of(http_client, sim, no)] == [
        ("CRASHED-1", 700)]
    clock.offset += 120
    await app.service.sweep()   # asked again later: refundquery knows it now, nothing is sent twice
    assert len(await sim_refunds_of(http_client, sim, no)) == 1


async def test_admin_lists_refunds_by_status(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    await call(http_client, "POST", sim.url + "/sim/faults", {"path": "/secapi/pay/refund", "kind": "status", "value": 503})
    for rno in ("OPEN-1", "OPEN-2", "OPEN-3"):
        assert (await refund(http_client, base_url, no, {"refund_fee": 100, "out_refund_no": rno}))[0] == 502
    status, page = await call(http_client, "GET", base_url + "/admin/refunds", headers=ADMIN)
    assert status == 200 and [r["out_refund_no"] for r in page["refunds"]] == ["OPEN-3", "OPEN-2", "OPEN-1"]
    assert {r["status"] for r in page["refunds"]} == {"PENDING"} and "next" not in page
    status, first = await call(http_client, "GET", base_url + "/admin/refunds?status=PENDING&limit=2", headers=ADMIN)
    assert [r["out_refund_no"] for r in first["refunds"]] == ["OPEN-3", "OPEN-2"] and first["next"]
    status, second = await call(http_client, "GET", base_url + "/admin/refunds?status=PENDING&limit=2&before="
                                + first["next"], headers=ADMIN)
    assert [r["out_refund_no"] for r in second["refunds"]] == ["OPEN-1"] and "next" not in second
    status, done = await call(http_client, "GET", base_url + "/admin/refunds?status=SUCCESS,FAILED", headers=ADMIN)
    assert status == 200 and done["refunds"] == []
    for query, code in (("?status=NOPE", "INVALID_STATUS"), ("?limit=0", "INVALID_LIMIT"),
                        ("?limit=abc", "INVALID_LIMIT"), ("?before=garbage", "INVALID_CURSOR")):
        status, data = await call(http_client, "GET", base_url + "/admin/refunds" + query, headers=ADMIN)
        assert status == 400 and data["error"]["code"] == code, query
    status, _ = await call(http_client, "GET", base_url + "/admin/refunds")
    assert status == 401


async def test_an_old_pending_refund_is_not_sent_again_by_itself(http_client, base_url, sim, app, clock):
    """Hours later an operator may have refunded by hand: only a young PENDING refund is re-sent."""
    _, no = await paid_order(http_client, base_url, sim, app)
    now = clock()
    await app.service.store.insert_refund(Refund(
        out_refund_no="OLD-1", out_trade_no=no, refund_fee=300, reason="", status="PENDING",
        created_at=now - 4 * 3600, updated_at=now - 4 * 3600), 50)
    admin = await admin_view(http_client, base_url, no, refresh=True)
    assert admin["refunds"][0]["status"] == "PENDING"
    assert await sim_refunds_of(http_client, sim, no) == []


def fail_once(app, error, to_status="PROCESSING"):
    """The store raises `error` once, when a refund is to move to `to_status` (the database
    gone for a moment after WeChat accepted the refund); everything else goes through."""
    store = app.service.store
    real, pending = store.refund_transition, [error]

    async def flaky(out_refund_no, from_statuses, status, source, **fields):
        if status == to_status and pending:
            raise pending.pop()
        return await real(out_refund_no, from_statuses, status, source, **fields)
    store.refund_transition = flaky


def with_key(key):
    return dict(ADMIN, **{"Idempotency-Key": key})


async def test_a_store_failure_after_wechat_accepted_is_refunded_once_on_retry(http_client, base_url, sim, app):
    """WeChat accepts a refund of 500 fen, then the database fails as the refund is marked
    PROCESSING. The 503 names the refund; the operator's retry with the same Idempotency-Key
    sends that one again (WeChat refunds an out_refund_no once) instead of a second refund."""
    _, no = await paid_order(http_client, base_url, sim, app, "coffee")     # 1200 fen
    fail_once(app, StoreError("database error"))
    first = await refund(http_client, base_url, no, {"refund_fee": 500}, with_key("refund-1"))
    again = await refund(http_client, base_url, no, {"refund_fee": 500}, with_key("refund-1"))
    at_wechat = [(r["out_refund_no"], r["refund_fee"]) for r in await sim_refunds_of(http_client, sim, no)]
    assert [fee for _, fee in at_wechat] == [500]
    assert first[0] == 503 and first[1]["error"]["code"] == "STORE_UNAVAILABLE"
    rno = first[1]["error"]["out_refund_no"]
    assert again[0] == 202 and (again[1]["out_refund_no"], again[1]["status"]) == (rno, "PROCESSING")
    assert at_wechat == [(rno, 500)]
    admin = await admin_view(http_client, base_url, no)
    assert admin["refundable_fee"] == 700 and [r["out_refund_no"] for r in admin["refunds"]] == [rno]


async def test_a_retry_with_the_out_refund_no_of_a_503_refunds_once(http_client, base_url, sim, app):
    """Without an Idempotency-Key, the error's out_refund_no is the handle for the retry."""
    _, no = await paid_order(http_client, base_url, sim, app, "coffee")
    fail_once(app, StoreError("database error"))
    status, data = await refund(http_client, base_url, no, {"refund_fee": 500})
    assert status == 503 and data["error"]["code"] == "STORE_UNAVAILABLE"
    rno = data["error"]["out_refund_no"]
    status, data = await refund(http_client, base_url, no, {"refund_fee": 500, "out_refund_no": rno})
    assert status == 202 and data["out_refund_no"] == rno
    assert [(r["out_refund_no"], r["refund_fee"]) for r in await sim_refunds_of(http_client, sim, no)] == [(rno, 500)]


async def test_every_failure_after_the_refund_is_stored_names_it(http_client, base_url, sim, app):
    """A bug (any exception) after the insert is a 500 in the error shape, naming the refund;
    a definite no from WeChat (502) names it too."""
    _, no = await paid_order(http_client, base_url, sim, app)
    fail_once(app, RuntimeError("a bug"))
    status, data = await refund(http_client, base_url, no, {"refund_fee": 100})
    assert status == 500 and data["error"]["code"] == "INTERNAL"
    assert (await app.service.store.get_refund(data["error"]["out_refund_no"])).refund_fee == 100
    clash = {"appid": DEMO["appid"], "mch_id": DEMO["mch_id"], "nonce_str": wxpay.nonce(), "out_trade_no": no,
             "out_refund_no": "CLASH-2", "total_fee": "2600", "refund_fee": "100"}
    await http_client.fetch(sim.url + "/secapi/pay/refund", method="POST", body=wxpay.signed_xml(clash, DEMO["api_key"]))
    status, data = await refund(http_client, base_url, no, {"refund_fee": 200, "out_refund_no": "CLASH-2"})
    assert status == 502 and data["error"]["out_refund_no"] == "CLASH-2"


async def test_one_idempotency_key_is_one_refund(http_client, base_url, sim, app):
    _, no = await paid_order(http_client, base_url, sim, app)
    _, other = await paid_order(http_client, base_url, sim, app, "tea")
    status, first = await refund(http_client, base_url, no, {"refund_fee": 300}, with_key("k-1"))
    assert status == 202
    for _ in range(2):   # a repeat, even once the refund has settled, is the same refund
        status, data = await refund(http_client, base_url, no, {"refund_fee": 300, "reason": "again"}, with_key("k-1"))
        assert status == 202 and data["out_refund_no"] == first["out_refund_no"]
        await settled(app, first["out_refund_no"])
    for order_no, fee in ((no, 301), (other, 300)):
        status, data = await refund(http_client, base_url, order_no, {"refund_fee": fee}, with_key("k-1"))
        assert status == 409 and data["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert "out_refund_no" not in data["error"]
    assert [r["refund_fee"] for r in await sim_refunds_of(http_client, sim, no)] == [300]
    assert await sim_refunds_of(http_client, sim, other) == []


@pytest.mark.parametrize("key", ["k" * 65, "", "密钥".encode().decode("latin-1"), "a\tb"])
async def test_a_malformed_idempotency_key_is_400(http_client, base_url, sim, app, key):
    _, no = await paid_order(http_client, base_url, sim, app)
    status, data = await refund(http_client, base_url, no, {"refund_fee": 100}, with_key(key))
    assert status == 400 and data["error"]["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert (await admin_view(http_client, base_url, no))["refunds"] == []
    assert await sim_refunds_of(http_client, sim, no) == []


async def test_a_refund_fee_over_wechats_limit_is_400(http_client, base_url, sim, app):
    """WeChat's refund_fee is a 32-bit integer: a larger one is a malformed request (400), not
    an amount over what was paid (409)."""
    _, no = await paid_order(http_client, base_url, sim, app)
    for fee in (2 ** 63, 2 ** 31, 10 ** 4000):
        status, data = await refund(http_client, base_url, no, {"refund_fee": fee})
        assert (status, data["error"]["code"]) == (400, "INVALID_REFUND_FEE"), str(fee)[:20]
    status, data = await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % no,
                              raw='{"refund_fee": %s}' % ("9" * 5001), headers=ADMIN)
    assert (status, data["error"]["code"]) == (400, "INVALID_JSON")   # json.loads refuses over 4300 digits
    status, data = await refund(http_client, base_url, no, {"refund_fee": 2 ** 31 - 1})
    assert (status, data["error"]["code"]) == (409, "REFUND_EXCEEDS_PAID")
    assert (await admin_view(http_client, base_url, no))["refunds"] == []
    assert await sim_refunds_of(http_client, sim, no) == []


async def test_a_key_with_another_out_refund_no_is_409(http_client, base_url, sim, app):
    """The caller names a refund (out_refund_no RF-B) that is not the one its key stands for
    (RF-A): that is another refund, not a retry; answering RF-A's 202 would tell the caller
    RF-B was made."""
    _, no = await paid_order(http_client, base_url, sim, app)
    status, _ = await refund(http_client, base_url, no, {"refund_fee": 300, "out_refund_no": "RF-A"}, with_key("k-2"))
    assert status == 202
    status, data = await refund(http_client, base_url, no, {"refund_fee": 300, "out_refund_no": "RF-B"},
                                with_key("k-2"))
    assert status == 409 and data["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    status, data = await refund(http_client, base_url, no, {"refund_fee": 300, "out_refund_no": "RF-A"},
                                with_key("k-2"))
    assert status == 202 and data["out_refund_no"] == "RF-A"
    assert await app.service.store.get_refund("RF-B") is None
