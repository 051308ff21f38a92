"""Hostile input at the notify URL and the JSON API: a clear error, quickly, nothing stored."""
import asyncio
import json
import logging
import re
import sqlite3
from urllib.parse import urlsplit

import pytest

from server.wechat.v2 import wire as wxpay
from tests.support import ADMIN_TOKEN
from tests.support.api import call, create, login

pytestmark = pytest.mark.gen_test(timeout=30)


def snapshot(app):
    """Everything the store holds, to prove a rejected request changed nothing."""
    conn = sqlite3.connect(app.service.config.database_url[len("sqlite:///"):])
    try:
        return [conn.execute("SELECT * FROM %s ORDER BY 1" % t).fetchall()
                for t in ("orders", "sessions", "order_events")]
    finally:
        conn.close()


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("TOPSECRET-CONTENT")
    return path


def hostile_xml(secret_file):
    laughs = "".join('<!ENTITY l%d "&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;">' % ((i,) + (i - 1,) * 10)
                     for i in range(1, 10))
    return {
        "xxe": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file://%s">]>'
                '<xml><return_code>&x;</return_code><out_trade_no>&x;</out_trade_no></xml>' % secret_file).encode(),
        "xxe-parameter": ('<!DOCTYPE xml [<!ENTITY %% p SYSTEM "file://%s"> %%p;]><xml/>' % secret_file).encode(),
        "billion-laughs": ('<!DOCTYPE xml [<!ENTITY l0 "ha">%s]><xml><a>&l9;</a></xml>' % laughs).encode(),
        "doctype": b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/x.dtd"><xml><a>1</a></xml>',
        "deep": b"<xml>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</xml>",
        "not-utf8": "<xml><out_trade_no>订单</out_trade_no></xml>".encode("gb18030"),
        "empty": b"",
        "json": b'{"return_code": "SUCCESS"}',
        "unicode-tags": "<xml><订单>1</订单><return_code>SUCCESS</return_code></xml>".encode(),
    }


@pytest.mark.parametrize("name", ["xxe", "xxe-parameter", "billion-laughs", "doctype", "deep", "not-utf8",
                                  "empty", "json", "unicode-tags"])
async def test_hostile_xml_at_notify_url(http_client, base_url, sim, app, secret_file, name):
    auth = await login(http_client, base_url, sim)
    await create(http_client, base_url, auth)
    before = snapshot(app)
    r = await http_client.fetch(base_url + "/wechat/pay/notify", method="POST",
                                body=hostile_xml(secret_file)[name], raise_error=False)
    assert r.code == 200 and wxpay.from_xml(r.body)["return_code"] == "FAIL"
    assert b"TOPSECRET" not in r.body and b"Traceback" not in r.body
    assert snapshot(app) == before


async def test_notify_body_over_limit_is_413(http_client, base_url, sim, app):
    before = snapshot(app)
    for size in (wxpay.MAX_XML_BYTES + 1, 5 * 1024 * 1024):
        body = b"<xml><a>" + b"x" * size + b"</a></xml>"
        r = await http_client.fetch(base_url + "/wechat/pay/notify", method="POST", body=body, raise_error=False)
        assert r.code == 413 and wxpay.from_xml(r.body)["return_code"] == "FAIL"
    assert snapshot(app) == before


@pytest.mark.parametrize("path", ["/api/login", "/api/orders"])
async def test_json_body_over_limit_is_413(http_client, base_url, sim, app, path):
    before = snapshot(app)
    for size in (20 * 1024, 5 * 1024 * 1024):
        body = json.dumps({"code": "x" * size, "product_id": "tea"})
        status, data = await call(http_client, "POST", base_url + path, raw=body)
        assert status == 413 and data["error"]["code"] == "BODY_TOO_LARGE"
    assert snapshot(app) == before


BAD_ORDERS = {
    "quantity-string": {"product_id": "tea", "quantity": "2"},
    "quantity-float": {"product_id": "tea", "quantity": 2.0},
    "quantity-negative": {"product_id": "tea", "quantity": -1},
    "quantity-huge": {"product_id": "tea", "quantity": 10 ** 40},
    "quantity-null": {"product_id": "tea", "quantity": None},
    "quantity-bool": {"product_id": "tea", "quantity": True},
    "product-list": {"product_id": ["tea"]},
    "product-object": {"product_id": {"id": "tea"}},
    "product-number": {"product_id": 1},
    "product-missing": {"quantity": 1},
    "product-unicode": {"product_id": "乌龙茶\u202e\U0001F375"},
    "product-nul": {"product_id": "tea\x00"},
}


@pytest.mark.parametrize("name", sorted(BAD_ORDERS))
async def test_wrong_types_at_orders(http_client, base_url, sim, app, name):
    auth = await login(http_client, base_url, sim)
    before = snapshot(app)
    status, data = await call(http_client, "POST", base_url + "/api/orders", BAD_ORDERS[name], auth)
    assert status == 400 and data["error"]["code"] in ("INVALID_QUANTITY", "UNKNOWN_PRODUCT")
    assert data["error"]["message"]
    assert snapshot(app) == before


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b'"tea"', b"null", b"\xff\xfe{}", b"[" * 8000 + b"]" * 8000,
    '{"product_id": "tea", "quantity": NaN}'.encode(), b'{"product_id": "tea", "quantity": 1e999}',
])
async def test_malformed_json_at_orders_and_login(http_client, base_url, sim, app, raw):
    auth = await login(http_client, base_url, sim)
    before = snapshot(app)
    for path in ("/api/orders", "/api/login"):
        status, data = await call(http_client, "POST", base_url + path, raw=raw, headers=auth)
        assert status == 400 and data["error"]["code"] in ("INVALID_JSON", "INVALID_QUANTITY", "INVALID_CODE")
    assert snapshot(app) == before


@pytest.mark.parametrize("body", [{"code": 123}, {"code": ["a"]}, {"code": ""}, {"code": "x" * 500}, {"code": None},
                                  {"code": "\x08"}, {"code": "a b"}, {"code": "码"}, {"code": " "}])
async def test_bad_login_codes_are_400(http_client, base_url, sim, app, body):
    before = snapshot(app)
    status, data = await call(http_client, "POST", base_url + "/api/login", body)
    assert status == 400 and data["error"]["code"] == "INVALID_CODE"
    assert snapshot(app) == before


def utf8_header(text):
    """UTF-8 bytes on the wire, as a client that ignores the latin-1 rule sends them."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer " + "A" * 43},
    {"Authorization": utf8_header("Bearer 令牌")}, {"Idempotency-Key": "k" * 65},
    {"Idempotency-Key": utf8_header("密钥")},
])
async def test_bad_headers(http_client, base_url, sim, app, headers):
    auth = await login(http_client, base_url, sim)
    before = snapshot(app)
    if "Idempotency-Key" in headers:
        headers = dict(auth, **headers)
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, headers)
    assert status in (400, 401) and data["error"]["code"] in ("UNAUTHORIZED", "INVALID_IDEMPOTENCY_KEY")
    assert snapshot(app) == before


async def test_extra_fields_ignored_and_unicode_round_trips(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, {"product_id": "cake", "quantity": 1, "备注": "少糖 🍰",
                                                        "total_fee": 1, "openid": "someone-else"})
    assert order["total_fee"] == 2600
    stored = await app.service.store.get_order(order["out_trade_no"])
    assert stored.openid != "someone-else" and stored.body == "Cheesecake 芝士蛋糕"
    status, data = await call(http_client, "GET", base_url + "/api/orders/%E8%AE%A2%E5%8D%95", headers=auth)
    assert status == 404 and data["error"]["code"] == "ORDER_NOT_FOUND"


async def first_answer(base_url, request):
    """(status, JSON body) of the first answer to raw request bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(base_url).port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *([0-9]{1,9})", head).group(1))
        return int(head.split()[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


async def test_a_content_length_of_5001_digits_is_413_before_authentication(http_client, base_url, sim, app, caplog):
    """int() of over 4300 digits raises ValueError: it was a 500 with a traceback of the whole
    header, before authentication, on any POST."""
    before = snapshot(app)
    for path in (b"/api/login", b"/api/orders", b"/admin/orders/X/refunds"):
        status, data = await first_answer(base_url, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n"
                                          % (path, b"9" * 5001))
        assert (status, data["error"]["code"]) == (413, "BODY_TOO_LARGE")
    assert [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert snapshot(app) == before


@pytest.mark.parametrize("path", ["/api/orders", "/admin/refunds"])
async def test_list_numbers_of_5001_digits_are_400(http_client, base_url, sim, app, path):
    headers = await login(http_client, base_url, sim) if path == "/api/orders" else {
        "Authorization": "Bearer " + ADMIN_TOKEN}
    for query, code in (("limit=" + "9" * 5001, "INVALID_LIMIT"), ("limit=" + "0" * 5000 + "5", "INVALID_LIMIT"),
                        ("limit=" + "9" * 19, "INVALID_LIMIT"), ("before=" + "9" * 5001 + ":R1", "INVALID_CURSOR"),
                        ("before=1." + "9" * 5001 + ":R1", "INVALID_CURSOR")):
        status, data = await call(http_client, "GET", base_url + path + "?" + query, headers=headers)
        assert (status, data["error"]["code"]) == (400, code), query[:20]
