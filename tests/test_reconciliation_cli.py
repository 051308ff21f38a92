"""`run_server.py reconcile --date ... [--json]` (server/reconcile_cli.py), its main run in process against
a fake v2 WeChat (a thread serving /pay/downloadbill) and a SQLite file: its lines and exit codes
(0 nothing unresolved, 1 mismatches, 2 an error in one line); one process test for the dispatch."""
import asyncio
import datetime
import gzip
import http.server
import json
import subprocess
import sys
import threading

import pytest

from server import reconcile_cli
from server.domain import BEIJING, NOTPAY, SUCCESS
from server.store.sqlite.store import SQLiteStore
from server.wechat.v2 import wire as v2_wire
from tests.support import DEMO
from tests.support.store import order
from tests.support.bills import HEADER, SUMMARY

PAYMENT = ("`2021-01-28 10:10:10,`%s,`%s,`0,`,`42%s,`%s,`openid,`JSAPI,`SUCCESS,`OTHERS,`CNY,`%s,`0.00,`0,`0,`0.00,"
           "`0.00,`,`,`Coffee,`,`0.07200,`0.60%%,`%s,`0.00,`")
NO_BILL = (b"<xml><return_code>FAIL</return_code><return_msg>No Bill Exist</return_msg>"
           b"<error_code>20002</error_code></xml>")


def bill_of(*payments):
    rows = [PAYMENT % (DEMO["appid"], DEMO["mch_id"], no, no, yuan, yuan) for no, yuan in payments]
    summary = "`%d,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00" % len(rows)
    return gzip.compress("\r\n".join([HEADER, *rows, SUMMARY, summary, ""]).encode())


@pytest.fixture
def wechat():
    """A fake WeChat on a thread: answers POST /pay/downloadbill with `.answer` (bytes), and
    /pay/orderquery (signed) with the orders of `.paid` (out_trade_no -> fen) paid, others not."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked = self.rfile.read(int(self.headers["Content-Length"]))
            answer = query_answer(v2_wire.from_xml(asked)) if self.path == "/pay/orderquery" else server.answer
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    def query_answer(asked):
        no = asked["out_trade_no"]
        state = {"trade_state": "SUCCESS", "total_fee": str(server.paid[no]), "transaction_id": "42" + no,
                 "time_end": "20210128101010"} if no in server.paid else {"trade_state": "NOTPAY"}
        return v2_wire.signed_xml(dict(state, return_code="SUCCESS", result_code="SUCCESS", appid=DEMO["appid"],
                                       mch_id=DEMO["mch_id"], nonce_str="n" * 16, out_trade_no=no), DEMO["api_key"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.answer, server.paid = NO_BILL, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(wechat, tmp_path):
    return {"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"], "WECHAT_MCH_ID": DEMO["mch_id"],
            "WECHAT_API_KEY": DEMO["api_key"], "WECHAT_NOTIFY_URL": "http://127.0.0.1:1/wechat/pay/notify",
            "WECHAT_PAY_BASE_URL": "http://127.0.0.1:%d" % wechat.server_address[1], "WECHAT_TIMEOUT": "5",
            "DATABASE_URL": "sqlite:///%s" % (tmp_path / "p.db")}


def in_store(env, *records, read=None):
    async def work():
        store = SQLiteStore(env["DATABASE_URL"][len("sqlite:///"):])
        await store.open()
        try:
            for record in records:
                await store.insert_order(record)
            return await store.get_order(read) if read else None
        finally:
            await store.close()
    return asyncio.run(work())


def test_mismatches_exit_1_with_a_line_each_and_a_second_run_finds_the_repair_matched(wechat, env, capsys):
    in_store(env, order("LOST1"))
    wechat.answer = bill_of(("LOST1", "12.00"), ("STRANGER", "9.90"))
    wechat.paid = {"LOST1": 1200, "STRANGER": 990}   # the repair waits for orderquery's signed word
    assert reconcile_cli.main(["--date", "2021-01-28"], env) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "downloading the bill of 2021-01-28" and out[1] == "comparing 2 bill rows with the store"
    assert "repaired LOST1: NOTPAY -> SUCCESS" in out
    assert "mismatch unknown_payment STRANGER: bill total_fee=990 transaction_id=42STRANGER, ours none" in out
    assert out[-1] == "2021-01-28: 2 bill rows, 0 matched, 1 repaired, 1 unresolved"
    assert in_store(env, read="LOST1").status == SUCCESS
    wechat.answer = bill_of(("LOST1", "12.00"))
    assert reconcile_cli.main(["--date", "2021-01-28", "--json"], env) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["matched"], report["repaired"], report["unresolved"]) == (1, [], 0)
    assert "downloading the bill of 2021-01-28" in captured.err


def test_a_bill_not_ready_exits_2_in_one_line_and_changes_nothing(wechat, env, capsys):
    in_store(env, order("LOST1"))
    today = datetime.datetime.now(BEIJING).date().isoformat()
    assert reconcile_cli.main(["--date", today], env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_server.py reconcile: the bill of %s is not ready" % today)
    assert in_store(env, read="LOST1").status == NOTPAY


def test_an_old_day_without_a_bill_had_no_trades(wechat, env, capsys):
    assert reconcile_cli.main(["--date", "2021-01-28"], env) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2021-01-28: 0 bill rows, 0 matched, 0 repaired, 0 unresolved"


@pytest.mark.parametrize("argv, variable, problem", [
    (["--date", "2021-13-01"], None, "--date: date must be a calendar day"),
    (["--date", "2021-01-28"], "WECHAT_PAY_BASE_URL", "WECHAT_PAY_BASE_URL must be an http(s) URL"),
    (["--date", "2021-01-28"], "WECHAT_PAY_BASE_URL=http://127.0.0.1:1", "WeChat: downloadbill"),
    (["--date", "2021-01-28"], "LOG_FORMAT=xml", "LOG_FORMAT must be one of text, json (got 'xml')"),
])
def test_errors_exit_2_naming_what(env, capsys, argv, variable, problem):
    if variable:
        name, _, value = variable.partition("=")
        env[name] = value or "not a url"
    assert reconcile_cli.main(argv, env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], err


def test_run_server_py_dispatches_the_subcommand():
    done = subprocess.run([sys.executable, "run_server.py", "reconcile", "--date", "2021-02-30"], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "run_server.py reconcile: --date: date must be a calendar day yyyy-MM-dd (Beijing), 1970 or later\n")
