"""Upstream faults injected through the simulator: the caller gets 502/504, nothing half-stored."""
import sqlite3

import pytest

from tests.support.processes import free_port
from tests.support.api import call, create, login

pytestmark = pytest.mark.gen_test(timeout=30)
TIMEOUT = 0.5


@pytest.fixture
def backend_overrides():
    return {"timeout": TIMEOUT}


def rows(app, sql):
    path = app.service.config.database_url[len("sqlite:///"):]
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def fault(http_client, sim, path, kind, **extra):
    status, data = await call(http_client, "POST", sim.url + "/sim/faults", dict(path=path, kind=kind, **extra))
    assert status == 201, data


async def attempts(http_client, sim, api):
    _, data = await call(http_client, "GET", sim.url + "/sim/requests")
    return [r for r in data["requests"] if r["api"] == api]


def no_order_claims_a_prepay(app):
    assert rows(app, "SELECT count(*) FROM orders WHERE prepay_id IS NOT NULL") == [(0,)]


@pytest.mark.parametrize("kind, value, status, code", [
    ("latency", 2000, 504, "UPSTREAM_TIMEOUT"),
    ("drop", None, 502, "UPSTREAM_ERROR"),
    ("malformed", None, 502, "UPSTREAM_ERROR"),
    ("bad_sign", None, 502, "UPSTREAM_ERROR"),
    ("status", 503, 502, "UPSTREAM_ERROR"),
])
async def test_unifiedorder_fault_then_recovery_with_same_order(http_client, base_url, sim, app,
                                                                kind, value, status, code):
    auth = await login(http_client, base_url, sim)
    await fault(http_client, sim, "/pay/unifiedorder", kind, value=value)
    key = {"Idempotency-Key": "cart-%s" % kind}
    got, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, dict(auth, **key))
    assert (got, data["error"]["code"]) == (status, code)   # 504: our deadline cut the slow answer
    no_order_claims_a_prepay(app)
    await call(http_client, "DELETE", sim.url + "/sim/faults")
    order = await create(http_client, base_url, auth, {"product_id": "tea"}, key)
    assert rows(app, "SELECT out_trade_no FROM orders") == [(order["out_trade_no"],)]
    assert order["payment"]["package"].startswith("prepay_id=wx")


async def test_system_error_retried_a_bounded_number_of_times(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    await fault(http_client, sim, "/pay/unifiedorder", "system_error")
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, auth)
    assert status == 502 and data["error"]["code"] == "UPSTREAM_ERROR"
    assert len(await attempts(http_client, sim, "/pay/unifiedorder")) == app.service.wechat.attempts == 3
    no_order_claims_a_prepay(app)


async def test_system_error_once_is_absorbed_by_a_retry(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    await fault(http_client, sim, "/pay/unifiedorder", "system_error", count=1)
    order = await create(http_client, base_url, auth, {"product_id": "tea"})
    assert len(await attempts(http_client, sim, "/pay/unifiedorder")) == 2
    assert order["payment"]["package"].startswith("prepay_id=wx")


async def test_login_errcode_minus_one_retried_then_502(http_client, base_url, sim, app):
    code = (await call(http_client, "POST", sim.url + "/sim/login", {"user": "u"}))[1]["code"]
    await fault(http_client, sim, "/sns/jscode2session", "system_error")
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": code})
    assert status == 502 and data["error"]["code"] == "UPSTREAM_ERROR"
    assert len(await attempts(http_client, sim, "/sns/jscode2session")) == 3
    await call(http_client, "DELETE", sim.url + "/sim/faults")
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": code})
    assert status == 200 and data["token"]


@pytest.mark.parametrize("kind, value, status", [("latency", 2000, 504), ("malformed", None, 502), ("drop", None, 502)])
async def test_login_faults(http_client, base_url, sim, app, kind, value, status):
    code = (await call(http_client, "POST", sim.url + "/sim/login", {"user": "u"}))[1]["code"]
    await fault(http_client, sim, "/sns/jscode2session", kind, value=value)
    got, data = await call(http_client, "POST", base_url + "/api/login", {"code": code})
    assert got == status and data["error"]["code"] in ("UPSTREAM_ERROR", "UPSTREAM_TIMEOUT")
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


async def test_orderquery_fault_on_refresh_is_reported_and_changes_nothing(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    await fault(http_client, sim, "/pay/orderquery", "bad_sign")
    status, data = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % order["out_trade_no"], headers=auth)
    assert status == 502
    assert rows(app, "SELECT status FROM orders") == [("NOTPAY",)]


@pytest.fixture
def refused_backend(backend_overrides):
    backend_overrides["pay_base_url"] = "http://127.0.0.1:%d" % free_port()
    return backend_overrides


async def test_connection_refused_is_502(refused_backend, http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, auth)
    assert status == 502 and data["error"]["code"] == "UPSTREAM_ERROR"
    no_order_claims_a_prepay(app)
