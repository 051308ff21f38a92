"""`run_server.py reconcile --date YYYY-MM-DD [--json]`: one day reconciled with the backend's configuration.

Exit codes: 0 when nothing is left unresolved, 1 when something is (each finding on a line of its
own), 2 on an error (a bad date or configuration, the bill not ready, WeChat or the database
down), named in one line.
"""
import asyncio
import json
import os
import sys

from server import config as server_config
from server import logs, settings
from server.app import App
from server.catalog import CatalogError
from server.cli import PROG, Parser, add_setting_flags, flag_values
from server.service import ServiceError
from server.service.reconciliation import parse_day
from server.store import StoreError
from server.wechat import WeChatError
from server.wechat.bill import BillNotReady

NAME = PROG + " reconcile"


def parse_args(argv):
    p = Parser(prog=NAME, description="Reconcile one Beijing day against WeChat's bill: repair what is safe, "
                                      "store and print the report. Exit 0: nothing unresolved; 1: mismatches "
                                      "left; 2: an error.")
    p.add_argument("--date", required=True, help="the Beijing calendar day, YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout (progress on stderr)")
    add_setting_flags(p)
    return p.parse_args(argv)


def main(argv, environ=None):
    """The subcommand's exit code."""
    args = parse_args(argv)
    environ = dict(os.environ) if environ is None else environ
    try:
        day = parse_day(args.date)
        config = server_config.Config.from_env(environ, flag_values(args, settings.SHOP, settings.V3))
    except ServiceError as exc:
        return _fail("--date: %s" % exc.message)
    except server_config.ConfigError as exc:
        return _fail(str(exc))
    log_format = environ.get("LOG_FORMAT", logs.TEXT)
    refused = settings.problems((settings.PROCESS,), {"log_format": log_format})
    if refused:
        return _fail(refused["log_format"])
    logs.setup("WARNING", False, log_format.strip().lower())
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else _say
    try:
        report = asyncio.run(_reconcile(config, day, progress))
    except BillNotReady as exc:
        return _fail("the bill of %s is not ready (%s); try again later" % (day, exc))
    except WeChatError as exc:
        return _fail("WeChat: %s" % exc)
    except (StoreError, CatalogError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2), flush=True)
    else:
        for line in findings(report):
            _say(line)
    return 1 if report["unresolved"] else 0


async def _reconcile(config, day, progress):
    backend = App(config)
    await backend.start()
    try:
        return await backend.service.reconciliation.run(day, progress)
    finally:
        await backend.stop(drain=0)


def findings(report):
    """A line per repair and per mismatch, then the count."""
    lines = ["repaired %s: %s -> %s" % (r.get("out_refund_no") or r["out_trade_no"], r["was"], r["now"])
             for r in report["repaired"]]
    for m in report["mismatches"]:
        refund = m.get("out_refund_no") and "refund " + m["out_refund_no"]
        number = " ".join(filter(None, [m.get("out_trade_no"), refund]))
        lines.append("mismatch %s %s: bill %s, ours %s" % (m["kind"], number, _figures(m["bill"]), _figures(m["ours"])))
    lines.append("%s: %d bill rows, %d matched, %d repaired, %d unresolved" % (
        report["date"], report["bill_rows"], report["matched"], len(report["repaired"]), report["unresolved"]))
    return lines


def _figures(side):
    if side is None:
        return "none"
    return " ".join("%s=%s" % (k, v) for k, v in side.items() if v is not None)


def _say(line):
    print(line, flush=True)


def _fail(message):
    print("%s: %s" % (NAME, message), file=sys.stderr, flush=True)
    return 2

