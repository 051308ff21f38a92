"""GET /metrics in process: counters after real flows (create, pay by notification and by
orderquery, refund, refused forgeries), the WeChat latency histogram, the pool's gauges, the
admin token rule. Counters are the process's own, shared by every test here: each test
compares a scrape after its flow with one before."""
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ADMIN_TOKEN, DEMO
from tests.support.api import call, create, login, notification, pay, post_notify, signed, wait_for

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


@pytest.fixture
def backend_overrides():
    # WeChat's notifications go nowhere: each payment and refund outcome is made by the test
    return {"timeout": 1.0, "notify_url": "http://127.0.0.1:9/wechat/pay/notify",
            "refund_notify_url": "http://127.0.0.1:9/wechat/refund/notify"}


async def scrape(http_client, base_url):
    r = await http_client.fetch(base_url + "/metrics", headers=ADMIN, raise_error=False)
    assert r.code == 200, r.body
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


async def test_counters_follow_orders_payments_notifications_and_refunds(http_client, base_url, sim, app):
    before = await scrape(http_client, base_url)
    auth = await login(http_client, base_url, sim)
    by_notify = await create(http_client, base_url, auth)
    note = notification(by_notify)
    assert (await post_notify(http_client, base_url, signed(note)))[1]["return_code"] == "SUCCESS"
    assert (await post_notify(http_client, base_url, signed(note)))[1]["return_code"] == "SUCCESS"
    forged = signed(notification(by_notify), key="0" * 32)
    assert (await post_notify(http_client, base_url, forged))[1]["return_code"] == "FAIL"
    other = await create(http_client, base_url, auth)
    wrong_amount = signed(notification(other, total_fee="1", cash_fee="1"))
    assert (await post_notify(http_client, base_url, wrong_amount))[1]["return_code"] == "FAIL"
    unknown = signed(notification(dict(other, out_trade_no="NOSUCHORDER")))
    assert (await post_notify(http_client, base_url, unknown))[1]["return_code"] == "FAIL"

    by_query = await create(http_client, base_url, auth)
    assert (await pay(http_client, sim, by_query["payment"]))[0] == 200
    status, view = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % by_query["out_trade_no"],
                              headers=auth)
    assert view["status"] == "SUCCESS", view

    no = by_query["out_trade_no"]   # paid at the simulator too: WeChat will refund it
    status, refund = await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % no,
                                {"refund_fee": 100}, ADMIN)
    assert status == 202, refund

    async def settled():
        _, data = await call(http_client, "GET", base_url + "/admin/orders/%s?refresh=1" % no, headers=ADMIN)
        return data["refunds"][0]["status"] == "SUCCESS"
    await wait_for(settled, 10)

    after = await scrape(http_client, base_url)
    assert delta(before, after, "wxpay_orders_created_total") == 3
    assert delta(before, after, "wxpay_payments_recorded_total", how="notification") == 1
    assert delta(before, after, "wxpay_payments_recorded_total", how="orderquery") == 1
    v2 = dict(version="v2", kind="payment")
    assert delta(before, after, "wxpay_notifications_total", verdict="accepted", reason="", **v2) == 1
    assert delta(before, after, "wxpay_notifications_total", verdict="duplicate", reason="", **v2) == 1
    for reason in ("signature", "amount", "unknown"):
        assert delta(before, after, "wxpay_notifications_total", verdict="refused", reason=reason, **v2) == 1, reason
    assert delta(before, after, "wxpay_refunds_total", outcome="accepted") == 1
    assert delta(before, after, "wxpay_refunds_total", outcome="success") == 1
    calls = dict(endpoint="unifiedorder", outcome="ok")
    assert delta(before, after, "wxpay_wechat_call_seconds_count", **calls) == 3
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="orderquery", outcome="ok") >= 1
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="refund", outcome="ok") == 1
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="jscode2session", outcome="ok") == 1
    # every call has ended: the pool's open connections are its idle ones, kept for the next call
    assert after[("wxpay_wechat_connections_open", ())] == after[("wxpay_wechat_connections_idle", ())] >= 1


async def test_a_refusal_an_error_and_a_timeout_of_wechat_are_outcomes_of_their_own(http_client, base_url, sim, app):
    before = await scrape(http_client, base_url)
    status, _ = await call(http_client, "POST", base_url + "/api/login", {"code": "not-a-code"})
    assert status >= 400                                       # WeChat said no: errcode 40029
    auth = await login(http_client, base_url, sim)
    sim.state.add_fault("/pay/unifiedorder", "status", "500", count=1)
    status, _ = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "coffee"}, auth)
    assert status == 502
    order = await create(http_client, base_url, auth)
    sim.state.add_fault("/pay/orderquery", "latency", "1500", count=1)   # WECHAT_TIMEOUT here: 1 s
    status, _ = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % order["out_trade_no"],
                           headers=auth)
    assert status == 504
    after = await scrape(http_client, base_url)
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="jscode2session",
                 outcome="wechat_error") == 1
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="unifiedorder",
                 outcome="upstream_error") == 1
    assert delta(before, after, "wxpay_wechat_call_seconds_count", endpoint="orderquery", outcome="timeout") == 1
    assert delta(before, after, "wxpay_wechat_call_seconds_bucket", endpoint="orderquery", outcome="timeout",
                 le="0.5") == 0


async def test_metrics_need_the_admin_token(http_client, base_url, app):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic " + ADMIN_TOKEN}):
        status, data = await call(http_client, "GET", base_url + "/metrics", headers=headers)
        assert status == 401 and data["error"]["code"] == "UNAUTHORIZED", (headers, data)
    r = await http_client.fetch(base_url + "/metrics", headers=ADMIN)
    assert b"wxpay_orders_created_total" in r.body


@pytest.mark.parametrize("backend_overrides", [{"admin_token": ""}])
async def test_without_an_admin_token_metrics_are_refused(http_client, base_url, app, backend_overrides):
    status, data = await call(http_client, "GET", base_url + "/metrics", headers=ADMIN)
    assert status == 401 and data["error"]["code"] == "UNAUTHORIZED"


def test_refusals_are_classed_in_a_few_reasons_never_their_message():
    from server import metrics
    assert metrics.reason_class("signature: the timestamp is 400 s from now") == "signature"
    assert metrics.reason_class("signature mismatch") == "signature"
    assert metrics.reason_class("sign_type MD5 does not match the order's HMAC-SHA256") == "signature"
    assert metrics.reason_class("replayed: nonce abc was seen before") == "replay"
    assert metrics.reason_class("total_fee 1 does not match the order's 1000") == "amount"
    assert metrics.reason_class("amounts do not match the refund") == "amount"
    assert metrics.reason_class("amount.total is missing or not in CNY fen") == "amount"
    assert metrics.reason_class("unknown order") == "unknown"
    assert metrics.reason_class("unknown refund") == "unknown"
    assert metrics.reason_class("invalid XML: <xml> not closed") == "other"


def test_v3_paths_are_named_by_their_template():
    from server import metrics
    assert metrics.v3_endpoint("/v3/pay/transactions/jsapi") == "/v3/pay/transactions/jsapi"
    assert metrics.v3_endpoint("/v3/pay/transactions/out-trade-no/2026ABC?mchid=1900000109") == \
        "/v3/pay/transactions/out-trade-no/{out_trade_no}"
    assert metrics.v3_endpoint("/v3/pay/transactions/out-trade-no/2026ABC/close") == \
        "/v3/pay/transactions/out-trade-no/{out_trade_no}/close"
    assert metrics.v3_endpoint("/v3/refund/domestic/refunds") == "/v3/refund/domestic/refunds"
    assert metrics.v3_endpoint("/v3/refund/domestic/refunds/R%7C1") == "/v3/refund/domestic/refunds/{out_refund_no}"
    assert metrics.v3_endpoint("/v3/bill/tradebill?bill_date=2026-01-01&bill_type=ALL") == "/v3/bill/tradebill"
    assert metrics.v3_endpoint("/v3/certificates") == "/v3/certificates"


def test_metrics_settings_are_checked_at_start():
    from server.config import ConfigError, ServerOptions
    options = ServerOptions.from_env({"METRICS_LISTEN": "[::1]:9100", "METRICS_DIR": ""})
    assert (options.metrics_listen, options.metrics_dir) == ("[::1]:9100", "")
    for bad in ("9100", "::1:9100", "127.0.0.1:0", "127.0.0.1:x", "localhost:65536"):
        with pytest.raises(ConfigError, match="METRICS_LISTEN must be host:port"):
            ServerOptions.from_env({"METRICS_LISTEN": bad})
    with pytest.raises(ConfigError, match="METRICS_DIR must be a writable directory"):
        ServerOptions.from_env({"METRICS_DIR": "/proc/no/such/dir"})


def test_the_multiprocess_directory_is_emptied_of_old_files_or_made_and_removed(tmp_path):
    from server.metrics import MultiprocessDirectory
    given = tmp_path / "given"
    given.mkdir()
    for name in ("counter_123.db", "gauge_livesum_123.db", "notes.txt"):
        (given / name).write_text("x")
    with MultiprocessDirectory(str(given)) as directory:
        assert sorted(os.listdir(directory)) == ["notes.txt"]   # only prometheus_client's files go
    assert given.exists()
    with MultiprocessDirectory() as made:
        assert os.listdir(made) == []
    assert not os.path.exists(made)


def test_a_scrape_reads_past_a_file_a_starting_process_has_just_created(tmp_path, monkeypatch):
    """A process (re)started by the supervisor creates its file empty, then sizes it: a scrape
    in that moment must still answer, with every other process's numbers."""
    import json
    from prometheus_client.mmap_dict import MmapedDict
    from server import metrics
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    written.write_value(json.dumps(["wxpay_store_errors", "wxpay_store_errors_total", {}, "h"]), 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").write_bytes(b"")   # opened by process 102, not yet sized
    monkeypatch.setattr(metrics.setup(), "multiprocess", True)   # setup() first: it clears the variable
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    _, body = metrics.scrape()
    samples = {s.name: s.value for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples["wxpay_store_errors_total"] == 3.0


def test_a_scrape_reads_only_the_metrics_files_of_a_shared_directory(tmp_path, monkeypatch):
    """METRICS_DIR's start-up cleaning leaves other files (a SQLite database beside them, say):
    the scrape must not read them as metrics."""
    import sqlite3
    from server import metrics
    sqlite3.connect(str(tmp_path / "payments.db")).execute("CREATE TABLE t (x)").connection.close()
    monkeypatch.setattr(metrics.setup(), "multiprocess", True)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    _, body = metrics.scrape()
    assert b"payments" not in body
