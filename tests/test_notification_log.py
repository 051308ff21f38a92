"""The notification log (server/service/notelog.py) on SQLite and PostgreSQL, in process: every
v2 and v3 notification kept with its verdict and reason, GET /admin/notifications (filters,
paging, bounds), POST /admin/notifications/<id>/replay, pruning by the sweep."""
import json
import time

import pytest

from server.app import make_app
from server.config import Config
from server.domain import NOTPAY, SUCCESS
from server.store import StoreError
from tests.support import ADMIN_TOKEN, DEMO, FakeClock
from tests.support.api import notification as v2_fields, signed
from tests.support.server3 import MCHID, APPID, notification as v3_notification, v3_values
from tests.support.store import make_store, order

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    return request.param


@pytest.fixture
def where(engine, request, tmp_path):
    return request.getfixturevalue("postgres_url") if engine == "postgres" else str(tmp_path / "p.db")


@pytest.fixture
def version():
    """Overridden by the v3 tests."""
    return "v2"


@pytest.fixture
def overrides():
    return {}


@pytest.fixture
def app(engine, where, tmp_path, clock, io_loop, version, overrides):
    """The backend (no WeChat behind it: nothing here calls out) on this test's database."""
    if version == "v3":
        config = Config.from_values(dict(v3_values(tmp_path, "http://127.0.0.1:1", admin_token=ADMIN_TOKEN),
                                         **overrides))
    else:
        config = Config(**dict(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                               api_key=DEMO["api_key"], notify_url="http://127.0.0.1:1/wechat/pay/notify",
                               admin_token=ADMIN_TOKEN, database_url="sqlite:///unused"), **overrides)
    web = make_app(config, store=make_store(engine, where, clock=clock), clock=clock)
    io_loop.run_sync(web.service.store.open)
    yield web
    web.service.wechat.close()
    io_loop.run_sync(web.service.store.close)


@pytest.fixture
def clock():
    return FakeClock()


async def an_order(app, no="T1", fee=1200):
    await app.service.store.insert_order(order(no, total_fee=fee, created_at=time.time(), updated_at=time.time()))
    return {"out_trade_no": no, "total_fee": fee}


async def post(http_client, url, body, headers=None):
    r = await http_client.fetch(url, method="POST", body=body, headers=headers or {}, raise_error=False)
    return r.code, r.body


async def admin(http_client, url, method="GET"):
    r = await http_client.fetch(url, method=method, headers=ADMIN, raise_error=False,
                                body=b"" if method == "POST" else None)
    return r.code, json.loads(r.body)


async def log_of(http_client, base_url, query=""):
    status, data = await admin(http_client, base_url + "/admin/notifications" + query)
    assert status == 200, data
    return data


# -- v2 --------------------------------------------------------------------------------------
async def test_genuine_forged_and_repeated_v2_payments_are_logged(http_client, base_url, app):
    paid = await an_order(app)
    genuine = signed(v2_fields(paid))
    forged = signed(v2_fields(paid, total_fee="1"), key="f" * 32)
    assert (await post(http_client, base_url + "/wechat/pay/notify", forged))[0] == 200   # FAIL XML
    assert (await app.service.store.get_order("T1")).status == NOTPAY
    assert (await post(http_client, base_url + "/wechat/pay/notify", genuine))[0] == 200
    assert (await post(http_client, base_url + "/wechat/pay/notify", genuine))[0] == 200
    assert (await app.service.store.get_order("T1")).status == SUCCESS
    entries = (await log_of(http_client, base_url))["notifications"]
    assert [e["verdict"] for e in entries] == ["duplicate", "accepted", "refused"]
    refused = entries[2]
    assert refused["reason"] == "signature mismatch" and refused["out_trade_no"] == "T1"
    assert refused["body"] == forged.decode() and refused["version"] == "v2" and refused["kind"] == "payment"
    assert entries[1]["reason"] is None and entries[1]["body"] == genuine.decode()
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    only = await log_of(http_client, base_url, "?verdict=refused&out_trade_no=T1")
    assert [e["id"] for e in only["notifications"]] == [refused["id"]]
    assert (await log_of(http_client, base_url, "?out_trade_no=T2"))["notifications"] == []


async def test_replay_of_an_applied_notification_is_a_duplicate_and_changes_nothing(http_client, base_url, app):
    paid = await an_order(app)
    await post(http_client, base_url + "/wechat/pay/notify", signed(v2_fields(paid)))
    [entry] = (await log_of(http_client, base_url))["notifications"]
    before = await app.service.store.events("T1")
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
    assert status == 200 and answer == {"id": entry["id"], "verdict": "duplicate", "reason": None}
    assert await app.service.store.events("T1") == before
    newest = (await log_of(http_client, base_url))["notifications"][0]
    assert newest["verdict"] == "duplicate" and newest["replay_of"] == entry["id"]


def notification_counts():
    """{(verdict, reason): count} of this process's wxpay_notifications_total (v2 payments)."""
    from server import metrics
    counts = {}
    for family in metrics.setup().prom.REGISTRY.collect():
        for s in family.samples:
            if s.name == "wxpay_notifications_total" and s.labels["kind"] == "payment" and s.labels["version"] == "v2":
                counts[(s.labels["verdict"], s.labels["reason"])] = s.value
    return counts


async def test_a_replay_is_not_counted_as_a_notification_received(http_client, base_url, app):
    """wxpay_notifications_total counts what WeChat (or a forger) sent; an admin's replay of a
    stored one is not a new notification, and a replayed refusal must not raise the alert on
    refusals. What a replay applies is counted where it lands (a payment, a refund)."""
    paid = await an_order(app, "CNT1")
    await post(http_client, base_url + "/wechat/pay/notify", signed(v2_fields(paid)))
    await post(http_client, base_url + "/wechat/pay/notify", signed(v2_fields(paid), key="f" * 32))
    applied, forged = (await log_of(http_client, base_url))["notifications"][::-1]
    before = notification_counts()
    for entry in (applied, forged):
        status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
        assert status == 200 and answer["verdict"] == {"accepted": "duplicate"}.get(entry["verdict"], "refused")
    assert notification_counts() == before


async def test_replay_of_a_refusal_after_the_fix_is_accepted(http_client, base_url, app):
    """An order unknown when its notification came (say, created by a host whose write was
    late): refused; once the order is there, the replay applies it."""
    notice = signed(v2_fields({"out_trade_no": "LATE1", "total_fee": 1200}))
    await post(http_client, base_url + "/wechat/pay/notify", notice)
    [entry] = (await log_of(http_client, base_url))["notifications"]
    assert entry["verdict"] == "refused" and entry["reason"] == "unknown order" and entry["out_trade_no"] == "LATE1"
    await an_order(app, "LATE1")
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
    assert status == 200 and answer["verdict"] == "accepted"
    assert (await app.service.store.get_order("LATE1")).status == SUCCESS
    assert (await app.service.store.events("LATE1"))[-1] == (NOTPAY, SUCCESS, "notify")


async def test_replay_of_a_v2_refund_notification_is_read_with_the_key_again_and_a_duplicate(http_client, base_url,
                                                                                             app):
    from tests.support.store import paid, refund
    from tests.test_refunds import encrypted_notification
    store = app.service.store
    await paid(store, "TR1")
    await store.insert_refund(refund("RR1", fee=500, trade="TR1"), 50)
    await store.refund_transition("RR1", ("PENDING",), "PROCESSING", "refund")
    info = {"out_refund_no": "RR1", "out_trade_no": "TR1", "refund_id": "50000001", "refund_fee": "500",
            "total_fee": str((await store.get_order("TR1")).total_fee), "refund_status": "SUCCESS",
            "success_time": "2026-01-01 12:00:00"}
    status, body = await post(http_client, base_url + "/wechat/refund/notify", encrypted_notification(info))
    assert status == 200 and b"SUCCESS" in body, body
    [entry] = (await log_of(http_client, base_url))["notifications"]
    assert (entry["kind"], entry["verdict"], entry["out_refund_no"]) == ("refund", "accepted", "RR1")
    before = await store.refund_events("RR1")
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
    assert status == 200 and answer["verdict"] == "duplicate", answer
    assert await store.refund_events("RR1") == before


async def test_a_refusal_whose_log_cannot_be_stored_is_still_answered(http_client, base_url, app):
    async def broken(entry):
        raise StoreError("database error")
    app.service.store.log_notification = broken
    status, body = await post(http_client, base_url + "/wechat/pay/notify", b"<xml>not signed</xml>")
    assert status == 200 and b"FAIL" in body


@pytest.mark.parametrize("overrides", [{"notification_log_body_bytes": 100}])
async def test_bodies_are_cut_at_the_bound_and_a_cut_one_is_not_replayed(http_client, base_url, app, overrides):
    paid = await an_order(app)
    genuine = signed(v2_fields(paid))
    await post(http_client, base_url + "/wechat/pay/notify", genuine)
    [entry] = (await log_of(http_client, base_url))["notifications"]
    assert entry["body"] == genuine[:100].decode() and entry["body_size"] == len(genuine)
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
    assert status == 409 and answer["error"]["code"] == "NOTIFICATION_CUT"


async def test_paging_newest_first(http_client, base_url, app, clock):
    for n in range(5):
        clock.offset += 1
        await post(http_client, base_url + "/wechat/pay/notify", b"<xml>%d</xml>" % n)
    seen, query = [], "?limit=2"
    while True:
        page = await log_of(http_client, base_url, query)
        seen += [e["body"] for e in page["notifications"]]
        if "next" not in page:
            break
        query = "?limit=2&before=" + page["next"]
    assert seen == ["<xml>%d</xml>" % n for n in reversed(range(5))]


@pytest.mark.parametrize("query, code", [("?limit=0", "INVALID_LIMIT"), ("?limit=201", "INVALID_LIMIT"),
                                         ("?verdict=maybe", "INVALID_VERDICT"), ("?before=x", "INVALID_CURSOR"),
                                         ("?before=1.0:abc", "INVALID_CURSOR"),
                                         ("?out_trade_no=" + "x" * 33, "INVALID_OUT_TRADE_NO")])
async def test_bad_queries_are_400(http_client, base_url, app, query, code):
    status, data = await admin(http_client, base_url + "/admin/notifications" + query)
    assert status == 400 and data["error"]["code"] == code


@pytest.mark.parametrize("id", ["0", "999", "abc", "-1", "9" * 30, "1e3"])
async def test_bad_ids_are_404(http_client, base_url, app, id):
    status, data = await admin(http_client, base_url + "/admin/notifications/%s/replay" % id, "POST")
    assert status == 404 and data["error"]["code"] in ("NOTIFICATION_NOT_FOUND", "NOT_FOUND")
    assert set(data["error"]) >= {"code", "message"}


async def test_the_admin_token_is_required(http_client, base_url, app):
    for method, path in (("GET", "/admin/notifications"), ("POST", "/admin/notifications/1/replay")):
        r = await http_client.fetch(base_url + path, method=method, raise_error=False,
                                    body=b"" if method == "POST" else None)
        assert r.code == 401 and json.loads(r.body)["error"]["code"] == "UNAUTHORIZED"


async def test_the_sweep_prunes_what_is_older_than_the_days_kept(http_client, base_url, app, clock):
    await post(http_client, base_url + "/wechat/pay/notify", b"<xml>old</xml>")
    clock.offset += 29 * 86400
    await post(http_client, base_url + "/wechat/pay/notify", b"<xml>recent</xml>")
    clock.offset += 2 * 86400   # the first is 31 days old now, the second 2
    await app.service.sweep()
    assert [e["body"] for e in (await log_of(http_client, base_url))["notifications"]] == ["<xml>recent</xml>"]


# -- v3 --------------------------------------------------------------------------------------
def v3_resource(no, fee=1200, **overrides):
    resource = {"appid": APPID, "mchid": MCHID, "out_trade_no": no, "transaction_id": "4200000000" + "1" * 18,
                "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "ok", "bank_type": "CMC",
                "success_time": "2026-01-01T12:00:00+08:00", "payer": {"openid": "o" * 28},
                "amount": {"total": fee, "payer_total": fee, "currency": "CNY", "payer_currency": "CNY"}}
    resource.update(overrides)
    return resource


@pytest.mark.parametrize("version", ["v3"])
async def test_v3_accepted_refused_and_replayed_past_the_window(http_client, base_url, app, clock, version):
    await an_order(app, "V3A")
    headers, body = v3_notification(v3_resource("V3A", fee=1))
    assert (await post(http_client, base_url + "/wechat/pay/v3/notify", body, headers))[0] == 400   # the amount
    headers, body = v3_notification(v3_resource("V3A"))
    assert (await post(http_client, base_url + "/wechat/pay/v3/notify", body, headers))[0] == 200
    assert (await post(http_client, base_url + "/wechat/pay/v3/notify", body, headers))[0] == 401   # its nonce again
    accepted, refused_amount = (await log_of(http_client, base_url, "?out_trade_no=V3A"))["notifications"]
    assert accepted["verdict"] == "accepted" and accepted["kind"] == "payment" and accepted["version"] == "v3"
    assert json.loads(accepted["body"])["resource"]["ciphertext"]   # what WeChat sent: still encrypted
    assert refused_amount["verdict"] == "refused" and "does not match" in refused_amount["reason"]
    replayed = (await log_of(http_client, base_url, "?verdict=refused"))["notifications"][0]
    assert replayed["reason"].startswith("replayed") and replayed["out_trade_no"] is None
    clock.offset += 3600   # long past the 5-minute window: a replay is verified, not refused for its age
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % accepted["id"], "POST")
    assert status == 200 and answer["verdict"] == "duplicate"
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % refused_amount["id"],
                                 "POST")
    assert status == 200 and answer["verdict"] == "refused" and "does not match" in answer["reason"]


@pytest.mark.parametrize("version", ["v3"])
async def test_v3_forgery_is_refused_on_replay_too(http_client, base_url, app, version):
    from tests.support.server3 import other_key
    await an_order(app, "V3F")
    headers, body = v3_notification(v3_resource("V3F"), key=other_key())
    assert (await post(http_client, base_url + "/wechat/pay/v3/notify", body, headers))[0] == 401
    [entry] = (await log_of(http_client, base_url))["notifications"]
    assert entry["verdict"] == "refused" and entry["reason"].startswith("signature")
    status, answer = await admin(http_client, base_url + "/admin/notifications/%d/replay" % entry["id"], "POST")
    assert status == 200 and answer["verdict"] == "refused" and answer["reason"].startswith("signature")
    assert (await app.service.store.get_order("V3F")).status == NOTPAY


@pytest.mark.parametrize("version", ["v3"])
async def test_v3_a_body_nested_too_deep_for_json_is_refused_and_logged(http_client, base_url, app, version):
    body = b"[" * 50000   # under the 64 KiB bound; too deep for Python's JSON reader
    headers, _ = v3_notification(v3_resource("V3N"))
    status, answer = await post(http_client, base_url + "/wechat/pay/v3/notify", body, headers)
    assert status in (400, 401) and json.loads(answer)["code"] == "FAIL", (status, answer)
    [entry] = (await log_of(http_client, base_url))["notifications"]
    assert (entry["verdict"], entry["kind"], entry["body"]) == ("refused", "other", body.decode())


def v3_counts():
    """{(kind, verdict, reason): count} of this process's wxpay_notifications_total for v3."""
    from server import metrics
    return {(s.labels["kind"], s.labels["verdict"], s.labels["reason"]): s.value
            for family in metrics.setup().prom.REGISTRY.collect() for s in family.samples
            if s.name == "wxpay_notifications_total" and s.labels["version"] == "v3"}


@pytest.mark.parametrize("version", ["v3"])
async def test_v3_each_verdict_is_counted_once(http_client, base_url, app, version):
    from tests.support.server3 import other_key
    await an_order(app, "V3C")
    before = v3_counts()
    url = base_url + "/wechat/pay/v3/notify"
    headers, body = v3_notification(v3_resource("V3C"))
    assert (await post(http_client, url, body, headers))[0] == 200
    assert (await post(http_client, url, body, headers))[0] == 401               # its nonce again
    assert (await post(http_client, url, *v3_notification(v3_resource("V3C"))[::-1]))[0] == 200   # resent: new nonce
    assert (await post(http_client, url, *v3_notification(v3_resource("V3C"), key=other_key())[::-1]))[0] == 401
    after = v3_counts()
    moved = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert moved == {("payment", "accepted", ""): 1, ("payment", "duplicate", ""): 1,
                     ("payment", "refused", "replay"): 1, ("payment", "refused", "signature"): 1}
    assert len((await log_of(http_client, base_url))["notifications"]) == 4
