"""The admin API of reconciliation, in process: POST /admin/reconciliations runs a day and answers its
report, GET /admin/reconciliations/<date> the stored one; errors in the API's JSON shape, nothing
stored for a day that failed."""
import json

import pytest

from server.app import make_app
from server.config import Config
from server.domain import NOTPAY, SUCCESS
from server.wechat import UpstreamError
from server.wechat.bill import BillNotReady
from tests.support import ADMIN_TOKEN, DEMO
from tests.support.store import order
from tests.support.bills import Clock, FakeBills, pay

pytestmark = pytest.mark.gen_test
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


class Bills(FakeBills):
    async def start(self):
        pass

    def close(self):
        pass


@pytest.fixture
def bills():
    return Bills([pay("LOST1"), pay("STRANGER", 990)])


@pytest.fixture
def app(tmp_path, bills, io_loop):
    config = Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"], api_key=DEMO["api_key"],
                    notify_url="http://127.0.0.1:1/wechat/pay/notify", admin_token=ADMIN_TOKEN,
                    database_url="sqlite:///%s" % (tmp_path / "p.db"))
    web = make_app(config, wechat=bills, clock=Clock())
    io_loop.run_sync(web.service.store.open)
    yield web
    io_loop.run_sync(web.service.store.close)


async def call(http_client, base_url, method, path, body=None, headers=ADMIN):
    answer = await http_client.fetch(base_url + path, method=method, headers=headers, raise_error=False,
                                     body=None if body is None else json.dumps(body))
    return answer.code, json.loads(answer.body)


async def test_post_runs_the_day_and_get_answers_the_stored_report(http_client, base_url, app):
    await app.service.store.insert_order(order("LOST1"))
    status, report = await call(http_client, base_url, "POST", "/admin/reconciliations", {"date": "2021-01-28"})
    assert status == 200, report
    assert report["repaired"] == [{"out_trade_no": "LOST1", "was": NOTPAY, "now": SUCCESS}]
    assert [(m["kind"], m["out_trade_no"], m["bill"]["total_fee"]) for m in report["mismatches"]] == [
        ("unknown_payment", "STRANGER", 990)]
    assert (report["bill_rows"], report["matched"], report["unresolved"]) == (2, 0, 1)
    assert await call(http_client, base_url, "GET", "/admin/reconciliations/2021-01-28") == (200, report)
    status, again = await call(http_client, base_url, "POST", "/admin/reconciliations", {"date": "2021-01-28"})
    assert (status, again["repaired"], again["matched"], again["mismatches"]) == (200, [], 1, report["mismatches"])


@pytest.mark.parametrize("method, path, body, status, code", [
    ("POST", "/admin/reconciliations", {"date": "2021-02-30"}, 400, "INVALID_DATE"),
    ("POST", "/admin/reconciliations", {"date": 20210128}, 400, "INVALID_DATE"),
    ("POST", "/admin/reconciliations", {}, 400, "INVALID_DATE"),
    ("POST", "/admin/reconciliations", {"date": "0001-01-01"}, 400, "INVALID_DATE"),   # WeChat would answer 502
    ("GET", "/admin/reconciliations/28-01-2021", None, 400, "INVALID_DATE"),
    ("GET", "/admin/reconciliations/2021-01-27", None, 404, "REPORT_NOT_FOUND"),
])
async def test_bad_dates_and_missing_reports(http_client, base_url, app, method, path, body, status, code):
    answer = await call(http_client, base_url, method, path, body)
    assert (answer[0], answer[1]["error"]["code"]) == (status, code)


async def test_without_the_admin_token_nothing_runs(http_client, base_url, app, bills):
    answer = await call(http_client, base_url, "POST", "/admin/reconciliations", {"date": "2021-01-28"}, headers={})
    assert (answer[0], answer[1]["error"]["code"]) == (401, "UNAUTHORIZED") and bills.days == []


@pytest.mark.parametrize("error, status, code, wechat_code", [
    (BillNotReady("STATEMENT_CREATING", "tradebill: being made", empty_day=False), 409, "BILL_NOT_READY",
     "STATEMENT_CREATING"),
    (UpstreamError("downloadbill answered HTTP 500"), 502, "UPSTREAM_ERROR", None),
])
async def test_wechat_not_ready_or_failing_is_an_error_and_nothing_is_stored(http_client, base_url, app, bills,
                                                                            error, status, code, wechat_code):
    await app.service.store.insert_order(order("LOST1"))
    bills.errors.append(error)
    answer = await call(http_client, base_url, "POST", "/admin/reconciliations", {"date": "2021-01-28"})
    assert (answer[0], answer[1]["error"]["code"], answer[1]["error"].get("wechat_code")) == (status, code, wechat_code)
    assert (await call(http_client, base_url, "GET", "/admin/reconciliations/2021-01-28"))[0] == 404
    assert (await app.service.store.get_order("LOST1")).status == NOTPAY
