"""LOG_FORMAT=json and X-Request-Id in process: every line one JSON object, each request's lines carry its id."""
import asyncio
import io
import json
import logging
import re

import pytest

from server import logs
from server.config import ConfigError, ServerOptions
from tests.support import ADMIN_TOKEN
from tests.support.api import call, create, login, paid_in_store, pay, wait_for

pytestmark = pytest.mark.gen_test(timeout=30)

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
MADE_ID = re.compile(r"[0-9a-f]{32}")   # uuid4().hex
ISO_BEIJING = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00")


@pytest.fixture
def json_log():
    """The root logger writes JSON lines (INFO, access lines included) to a buffer; a function
    returns them parsed, failing on any line that is not one JSON object."""
    buffer = io.StringIO()
    handler = logs.handler(logs.JSON, buffer)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # a CLI main run in process by an earlier test of this worker (logs.setup with access lines
    # off) leaves tornado.access at WARNING: these tests want the access lines
    access = {name: logging.getLogger(name).level for name in ("tornado.access", "simulator.access")}
    for name in access:
        logging.getLogger(name).setLevel(logging.NOTSET)

    def lines():
        text = buffer.getvalue()
        parsed = [json.loads(line) for line in text.splitlines()]
        assert all(isinstance(entry, dict) for entry in parsed)
        return parsed
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)
    for name, was in access.items():
        logging.getLogger(name).setLevel(was)


async def fetch(http_client, url, **kwargs):
    return await http_client.fetch(url, raise_error=False, **kwargs)


def access_lines(lines, path):
    return [e for e in lines if e["logger"] == "tornado.access" and e.get("path", "").startswith(path)]


# --- the setting ----------------------------------------------------------------------------------

def test_log_format_is_text_by_default_and_a_bad_value_is_named():
    assert ServerOptions.from_env({}).log_format == "text"
    assert ServerOptions.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError) as info:
        ServerOptions.from_env({"LOG_FORMAT": "xml"})
    assert "LOG_FORMAT must be one of text, json (got 'xml')" in str(info.value)


def test_setup_in_json_mode_writes_one_object_per_line_on_stderr_tracebacks_included(capsys, monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])   # as in a process of its own: pytest's are put back after
    level = root.level
    try:
        logs.setup("INFO", True, "json")
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("run_server").exception("process %d failed", 7)
    finally:
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert ISO_BEIJING.fullmatch(entry["time"]), entry
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "run_server", "process 7 failed")
    assert entry["exc_info"].startswith("Traceback") and "ValueError: bad\nthing" in entry["exc_info"]
    assert "request_id" not in entry and "out_trade_no" not in entry


# --- X-Request-Id -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sent", ["abc", "req-1.2:3_x", "a" * 128])
async def test_a_proxys_request_id_is_answered_and_logged(http_client, base_url, sim, app, json_log, sent):
    for path in ("/api/products", "/no-such-path", "/admin/refunds"):
        r = await fetch(http_client, base_url + path, headers={"X-Request-Id": sent})
        assert r.headers["X-Request-Id"] == sent, (path, r.code)
        assert [e["request_id"] for e in access_lines(json_log(), path)] == [sent], path


@pytest.mark.parametrize("sent", ["", "a" * 129, "has space", "semi;colon", "ünï"])
async def test_a_request_id_out_of_shape_is_replaced_by_a_made_one(http_client, base_url, sim, app, json_log, sent):
    r = await fetch(http_client, base_url + "/api/products", headers={"X-Request-Id": sent})
    assert MADE_ID.fullmatch(r.headers["X-Request-Id"]), r.headers["X-Request-Id"]


async def test_every_answer_without_an_id_gets_a_new_one(http_client, base_url, sim, app, json_log):
    answers = [await fetch(http_client, base_url + "/api/products"),
               await fetch(http_client, base_url + "/api/products"),
               await fetch(http_client, base_url + "/api/orders", method="POST", body="{"),
               await fetch(http_client, base_url + "/api/orders", method="PUT", body="{}"),
               await fetch(http_client, base_url + "/wechat/pay/notify", method="POST", body="<xml></xml>"),
               await fetch(http_client, base_url + "/wechat/pay/v3/notify", method="POST", body="{}")]
    ids = [r.headers.get("X-Request-Id", "") for r in answers]
    assert all(MADE_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert {e["request_id"] for e in json_log() if e["logger"] == "tornado.access"} == set(ids)


# --- a whole flow in JSON mode --------------------------------------------------------------------------

async def test_a_whole_flow_logs_json_lines_carrying_request_ids_and_order_numbers(
        http_client, base_url, sim, app, json_log, monkeypatch):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, headers={"X-Request-Id": "create-1"})
    no = order["out_trade_no"]
    await pay(http_client, sim, order["payment"])
    await paid_in_store(app, no)
    status, refund = await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % no, {"refund_fee": 1},
                                dict(ADMIN, **{"X-Request-Id": "refund-1"}))
    assert status == 202, refund

    async def settled():
        return (await app.service.store.get_refund(refund["out_refund_no"])).status == "SUCCESS"
    await wait_for(settled, 10)
    monkeypatch.setattr(app.service.catalog, "all", lambda: 1 / 0)
    r = await fetch(http_client, base_url + "/api/products", headers={"X-Request-Id": "boom"})
    assert r.code == 500 and r.headers["X-Request-Id"] == "boom"

    lines = json_log()
    assert all(ISO_BEIJING.fullmatch(e["time"]) and e["level"] and e["logger"] for e in lines)
    [created] = access_lines(lines, "/api/orders")
    assert (created["request_id"], created["out_trade_no"], created["status"]) == ("create-1", no, 201)
    [notified] = [e for e in access_lines(lines, "/wechat/pay/notify") if e["status"] == 200]
    [paid] = [e for e in lines if e["message"].startswith("order %s paid" % no)]
    assert MADE_ID.fullmatch(paid["request_id"]) and paid["request_id"] == notified["request_id"]
    assert paid["out_trade_no"] == no
    [accepted] = [e for e in lines if e["message"].startswith("refund %s of 1 fen" % refund["out_refund_no"])]
    assert (accepted["request_id"], accepted["out_trade_no"]) == ("refund-1", no)
    [failure, answered] = [e for e in lines if e["level"] == "ERROR" and e.get("request_id") == "boom"]
    assert failure["exc_info"].startswith("Traceback") and "ZeroDivisionError" in failure["exc_info"]
    assert (answered["logger"], answered["status"], "exc_info" in answered) == ("tornado.access", 500, False)
    assert not [e for e in lines if e["logger"].startswith("simulator") and "request_id" in e]


async def test_the_sweeps_lines_carry_the_order_they_are_about_and_no_request_id(http_client, base_url, sim, app,
                                                                                  json_log, clock):
    order = await create(http_client, base_url, await login(http_client, base_url, sim))
    no = order["out_trade_no"]
    app.service.handle_notify = lambda body: asyncio.sleep(0, b"<xml><return_code>FAIL</return_code></xml>")
    assert (await pay(http_client, sim, order["payment"]))[0] == 200
    clock.offset += 61
    assert await app.service.sweep() == 1
    [paid] = [e for e in json_log() if e["message"].startswith("order %s paid" % no)]
    assert paid["out_trade_no"] == no and "request_id" not in paid, paid
    [summary] = [e for e in json_log() if e["message"].startswith("sweep: checked")]
    assert "out_trade_no" not in summary and "request_id" not in summary, summary


async def test_a_forgers_line_break_cannot_start_a_line_of_its_own_in_text_mode(http_client, base_url, sim, app):
    """The text format (the default) is read line by line too: a refusal's message quotes what
    a forger sent (an unverified v2 sign_type), whose line break must not forge a line."""
    from tests.support.api import notification, post_notify, signed
    buffer = io.StringIO()
    handler = logs.handler(logs.TEXT, buffer)
    logging.getLogger().addHandler(handler)
    try:
        order = await create(http_client, base_url, await login(http_client, base_url, sim))
        fields = dict(notification(order), sign_type="MD5\n2026 FORGED")
        assert (await post_notify(http_client, base_url, signed(fields)))[1]["return_code"] == "FAIL"
    finally:
        logging.getLogger().removeHandler(handler)
    lines = buffer.getvalue().splitlines()
    assert [line for line in lines if "sign_type" in line], lines
    assert all(ISO_BEIJING.match(line) for line in lines), lines


async def test_metrics_listens_access_lines_have_the_json_fields_of_every_access_line(http_client, json_log):
    import tornado.httpserver
    import tornado.netutil
    from server.http.scrape import metrics_application
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(metrics_application())
    server.add_sockets(sockets)
    try:
        url = "http://127.0.0.1:%d/metrics" % sockets[0].getsockname()[1]
        assert (await fetch(http_client, url, headers={"X-Request-Id": "scrape-1"})).code == 200
    finally:
        server.stop()
    [line] = access_lines(json_log(), "/metrics")
    assert (line["request_id"], line["status"], line["method"]) == ("scrape-1", 200, "GET"), line
