"""Errors that say what to do: the URL tried, what answered there, and the next step (the backend's
502s and their log lines, `run_simulator.py demo`), one log line per 404, log times with their zone."""
import asyncio
import datetime
import logging
import re
import socket

import pytest
import tornado.testing

from server import logs as server_logs
from simulator import cli as sim_cli, demo, tls
from simulator.app import make_app as make_sim_app, make_server
from simulator.config import SimConfig
from simulator.state import State
from tests.support import DEMO
from tests.support.api import call, wx_login
from tests.support.sim import stop_simulator

GEN = pytest.mark.gen_test(timeout=30)
ISO_BEIJING = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00"


def dead_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tls_sim(io_loop, tmp_path):
    """The simulator over HTTPS (its own CA in tmp_path/tls) in the test's IOLoop; .port, .ca_file."""
    files = tls.prepare(str(tmp_path / "tls"), mch_id=DEMO["mch_id"])
    sim_app = make_sim_app(State(SimConfig.demo(), time_scale=0.01))
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(sim_app, ssl_options=tls.server_context(files))
    server.add_sockets([sock])
    sim_app.port, sim_app.ca_file = port, files.ca_cert
    yield sim_app
    stop_simulator(sim_app, io_loop)
    server.stop()


def unreachable_overrides(port):
    base = "http://127.0.0.1:%d" % port
    return {"login_base_url": base, "pay_base_url": base}


# --- the backend: WeChat (the simulator) not there ----------------------------------------------

@GEN
@pytest.mark.parametrize("backend_overrides", [unreachable_overrides(dead_port())])
async def test_unreachable_wechat_names_the_url_and_the_next_step(http_client, base_url, app, backend_overrides,
                                                                  caplog):
    status, answer = await call(http_client, "POST", base_url + "/api/login", {"code": "any"})
    assert status == 502, answer
    message = answer["error"]["message"]
    url = backend_overrides["login_base_url"] + "/sns/jscode2session"
    assert "cannot reach WeChat at %s: nothing listens there" % url in message, message
    assert "run_server.py --simulator" in message and "WECHAT_LOGIN_BASE_URL" in message
    assert DEMO["app_secret"] not in message and "js_code=" not in message   # the query holds the AppSecret
    logged = [r.getMessage() for r in caplog.records if "/api/login" in r.getMessage()]
    assert any(url in line for line in logged), logged


@pytest.fixture
def backend_overrides(request):
    """Config overrides: for a test that takes tls_sim, http:// to the simulator's HTTPS port."""
    if "tls_sim" not in request.fixturenames:
        return {}
    base = "http://127.0.0.1:%d" % request.getfixturevalue("tls_sim").port
    return {"login_base_url": base, "pay_base_url": base}


@GEN
async def test_plain_http_to_the_https_simulator_says_use_https(http_client, base_url, app, tls_sim):
    status, answer = await call(http_client, "POST", base_url + "/api/login", {"code": "any"})
    assert status == 502, answer
    assert "speaks HTTPS here: use https://127.0.0.1:%d" % tls_sim.port in answer["error"]["message"]


# --- the backend: a sign error names the simulator's explanation ----------------------------------

@GEN
@pytest.mark.parametrize("backend_overrides", [{"api_key": "W" * 32}])
async def test_v2_sign_error_points_at_the_simulators_explanation(http_client, base_url, sim, app,
                                                                 backend_overrides, caplog):
    code = await wx_login(http_client, sim)
    status, answer = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "coffee", "code": code})
    assert status == 502, answer
    message = answer["error"]["message"]
    assert "签名错误" in message
    assert "see %s/sim/console (or %s/sim/requests) for the string WeChat signed" % (sim.url, sim.url) in message
    assert any("/sim/console" in r.getMessage() for r in caplog.records if "/api/orders" in r.getMessage())


# --- the admin API and the HTTP layer name what to send -------------------------------------------

@GEN
@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer "}, {"Authorization": "Bearer wrong-token-123456"}],
                         ids=["no header", "empty token", "wrong token"])
async def test_a_refused_admin_call_says_which_token_to_send(http_client, base_url, app, headers):
    status, answer = await call(http_client, "POST", base_url + "/admin/orders/X1/refunds", {"refund_fee": 1},
                                headers=headers)
    assert status == 401 and answer["error"]["code"] == "UNAUTHORIZED", answer
    message = answer["error"]["message"]
    assert "Authorization: Bearer" in message and "ADMIN_TOKEN" in message, message
    assert "run_server.py --simulator prints" in message, message


@GEN
async def test_a_method_not_allowed_names_the_method_and_the_openapi_document(http_client, base_url, app):
    status, answer = await call(http_client, "GET", base_url + "/admin/orders/X1/refunds")
    assert status == 405 and answer["error"]["code"] == "METHOD_NOT_ALLOWED", answer
    message = answer["error"]["message"]
    assert "GET" in message and "/openapi.json" in message, message


# --- one log line per 404 ---------------------------------------------------------------------------

@GEN
async def test_a_404_is_logged_once(http_client, base_url, app, caplog):
    caplog.set_level(logging.INFO)
    status, _ = await call(http_client, "GET", base_url + "/no-such-path")
    assert status == 404
    lines = [r.getMessage() for r in caplog.records if "/no-such-path" in r.getMessage()]
    assert len(lines) == 1, lines


# --- log times carry their zone ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [server_logs.formatter, sim_cli.log_formatter], ids=["server", "simulator"])
def test_log_times_are_iso_8601_in_beijing_time_with_the_offset(make):
    formatter = make()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.created = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, datetime.timezone.utc).timestamp()
    line = formatter.format(record)
    assert line.startswith("2026-01-02T11:04:05.678+08:00 "), line
    assert re.match(ISO_BEIJING, line)


# --- run_simulator.py demo -------------------------------------------------------------------------

def run_demo(capsys, *argv):
    code = demo.main(list(argv))
    return code, capsys.readouterr().out


def test_demo_before_anything_runs_names_the_url_and_the_next_step(capsys):
    sim_url = "https://127.0.0.1:%d" % dead_port()
    code, out = run_demo(capsys, "--simulator", sim_url, "--backend", "http://127.0.0.1:%d" % dead_port())
    assert code == 1
    assert "Max retries" not in out and "HTTPSConnectionPool" not in out, out
    assert "nothing answers at %s" % sim_url in out, out
    assert "start `python run_server.py --simulator` first" in out, out


@GEN
async def test_demo_without_the_backend_names_its_url_and_the_next_step(sim, capsys):
    backend = "http://127.0.0.1:%d" % dead_port()
    code = await asyncio.to_thread(demo.main, ["--simulator", sim.url, "--backend", backend])
    out = capsys.readouterr().out
    assert code == 1
    assert "Max retries" not in out, out
    assert "nothing answers at %s" % backend in out, out
    assert "start `python run_server.py --simulator` first" in out, out


@GEN
async def test_demo_with_http_for_the_https_simulator_says_use_https(tls_sim, capsys):
    code = await asyncio.to_thread(demo.main, ["--simulator", "http://127.0.0.1:%d" % tls_sim.port,
                                              "--ca-file", tls_sim.ca_file])
    out = capsys.readouterr().out
    assert code == 1
    assert "ConnectionResetError" not in out and "Connection aborted" not in out, out
    assert "the simulator speaks HTTPS here: use https://127.0.0.1:%d" % tls_sim.port in out, out


@GEN
@pytest.mark.parametrize("backend_overrides", [{"api_key": "W" * 32}])
async def test_demo_shows_the_backends_error_whole(http_client, base_url, sim, app, backend_overrides, capsys):
    code = await asyncio.to_thread(demo.main, ["--simulator", sim.url, "--backend", base_url])
    out = capsys.readouterr().out
    assert code == 1
    assert "answered 502 UPSTREAM_ERROR: WeChat: unifiedorder" in out, out
    assert "and WECHAT_SIGN_TYPE the one signed with)" in out, out
