"""run_simulator.py as a real process, and unmodified wechatpy talking to it."""
import ast
import json
import os
import signal
import socket
import sys
import types
import uuid

import pytest
import requests
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException, WeChatPayException
from wechatpy.pay import WeChatPay

from simulator.config import SimConfig
from tests.support.processes import ROOT, Proc, free_port
from tests.support.sim import simulator_process, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, DEMO_SECRET, wait_output

pytestmark = pytest.mark.e2e


def run_failing(args, timeout=20):
    """Run run_simulator.py expecting it to exit by itself; (returncode, output)."""
    proc = Proc("run_simulator.py", args, wait_port=False)
    with proc:
        code = proc.wait(timeout)
        return code, proc.output()


def assert_one_clear_line(output, *needles):
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("run_simulator.py: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def sim():
    with simulator_process('control plane') as proc:
        yield proc


def test_banner_shows_url_credentials_and_time_scale(sim):
    out = sim.output()
    assert "http://127.0.0.1:%d" % sim.port in out
    for value in (DEMO_APPID, DEMO_SECRET, DEMO_MCH_ID, DEMO_API_KEY):
        assert value in out
    assert "time scale 0.001 (not 1)" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(sig):
    port = free_port()
    with Proc("run_simulator.py", ["--port", str(port)], port=port) as proc:
        out = wait_output(proc, "control plane")
        assert "time scale 1: real WeChat durations" in out
        assert proc.stop(sig) == 0
        assert "stopped" in proc.output() and "Traceback" not in proc.output()


def test_busy_port_is_one_clear_line_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = run_failing(["--port", str(port)])
    assert code == 2
    assert_one_clear_line(out, "port %d" % port, "already in use")


def write(tmp_path, content):
    path = tmp_path / "merchants.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


GOOD = {"apps": [{"appid": "wxaaaa", "secret": "sa"}, {"appid": "wxbbbb", "secret": "sb"}],
        "merchants": [{"mch_id": "1001", "api_key": "a" * 32, "appids": ["wxaaaa"]},
                      {"mch_id": "1002", "api_key": "b" * 32, "appids": ["wxaaaa", "wxbbbb"]}]}


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    (dict(GOOD, merchants=[{"mch_id": "1", "api_key": "a" * 31, "appids": ["wxaaaa"]}]),
     "merchants[0].api_key must be 32 characters (got 31)"),
    (dict(GOOD, merchants=[{"mch_id": "1", "api_key": "a" * 32, "appids": ["wxzzzz"]}]),
     "'wxzzzz' is not an appid"),
    (dict(GOOD, apps=[]), '"apps" must be a non-empty list'),
    (dict(GOOD, merchant=[]), "unknown field 'merchant'"),
    ([1, 2], "top level must be a JSON object"),
])
def test_bad_config_is_one_clear_line_exit_2(tmp_path, content, needle, capsys):
    """run_simulator.py's main in process (it stops before it listens or logs); the process
    path of a bad --config is test_missing_config_file_and_conflicting_flags's."""
    from simulator import cli
    code = cli.main(["--port", str(free_port()), "--config", write(tmp_path, content)])
    captured = capsys.readouterr()
    assert code == 2
    assert_one_clear_line(captured.out + captured.err, "merchants.json", needle)


def test_missing_config_file_and_conflicting_flags(tmp_path):
    code, out = run_failing(["--config", str(tmp_path / "nope.json")])
    assert code == 2
    assert_one_clear_line(out, "cannot read")
    code, out = run_failing(["--config", write(tmp_path, GOOD), "--appid", "wx1"])
    assert code == 2
    assert_one_clear_line(out, "--config cannot be combined")
    code, out = run_failing(["--api-key", "short"])
    assert code == 2
    assert_one_clear_line(out, "api_key must be 32 characters")


@pytest.mark.parametrize("args, needle", [
    (["--time-scale", "0"], "must be a positive number"),
    (["--port", "70000"], "a port is 0..65535"),
])
def test_bad_flags_exit_2(args, needle):
    code, out = run_failing(args)
    assert code == 2 and needle in out and "Traceback" not in out


def test_config_with_several_merchants(tmp_path):
    port = free_port()
    with Proc("run_simulator.py", ["--port", str(port), "--config", write(tmp_path, GOOD)],
              port=port) as proc:
        out = wait_output(proc, "control plane")
        assert "mch_id=1001" in out and "mch_id=1002" in out and "appid=wxbbbb" in out
        config = requests.get(proc.url + "/sim/config", timeout=5).json()
        assert config["merchants"][1] == {"mch_id": "1002", "appids": ["wxaaaa", "wxbbbb"]}


def test_seed_flag():
    from simulator import cli as run_simulator   # run_simulator.py's command line
    assert run_simulator.parse_args(["--seed", "42"]).seed == 42
    assert run_simulator.parse_args([]).seed is None
    assert "seeded with 42" in run_simulator.banner("http://x", SimConfig.demo(), 1.0, seed=42)
    assert "seeded" not in run_simulator.banner("http://x", SimConfig.demo(), 1.0)


def test_demo_subcommand_is_dispatched(monkeypatch):
    from simulator import cli as run_simulator   # run_simulator.py's command line
    seen = []
    fake = types.ModuleType("simulator.demo")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "simulator.demo", fake)
    assert run_simulator.main(["demo", "--backend", "http://x"]) == 7
    assert seen == [["--backend", "http://x"]]


def test_simulator_never_imports_server():
    files = [os.path.join(ROOT, "run_simulator.py")]
    sim_dir = os.path.join(ROOT, "simulator")
    files += [os.path.join(sim_dir, f) for f in os.listdir(sim_dir) if f.endswith(".py")]
    for path in files:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n == "server" or n.startswith("server.")], path


# --- wechatpy, unchanged, pointed at the simulator ------------------------------------

def sim_login(sim, user):
    return requests.post(sim.url + "/sim/login", json={"user": user}, timeout=5).json()


@pytest.mark.parametrize("sandbox", [False, True])
def test_wechatpy_pay_creates_queries_pays_and_closes(sim, sandbox):
    pay = WeChatPay(DEMO_APPID, DEMO_API_KEY, DEMO_MCH_ID, sandbox=sandbox, timeout=5)
    pay.API_BASE_URL = sim.url + "/"
    openid = sim_login(sim, "sdk-user")["openid"]
    out_trade_no = "SDK" + uuid.uuid4().hex[:20]
    created = pay.order.create(trade_type="JSAPI", body="wechatpy order", total_fee=1,
                               notify_url="http://127.0.0.1:9/notify", client_ip="127.0.0.1",
                               user_id=openid, out_trade_no=out_trade_no)
    assert created["result_code"] == "SUCCESS" and created["prepay_id"].startswith("wx")
    assert pay.check_signature(dict(created))   # wechatpy checks our answer's MD5 sign
    assert pay.order.query(out_trade_no=out_trade_no)["trade_state"] == "NOTPAY"
    params = pay.jsapi.get_jsapi_params(created["prepay_id"])
    params["appid"] = params.pop("appId")
    paid = requests.post(sim.url + "/sim/pay", json=params, timeout=5)
    assert paid.status_code == 200, paid.text
    queried = pay.order.query(transaction_id=paid.json()["transaction_id"])
    assert queried["trade_state"] == "SUCCESS" and queried["out_trade_no"] == out_trade_no
    with pytest.raises(WeChatPayException) as err:
        pay.order.close(out_trade_no)
    assert err.value.errcode == "ORDERPAID"
    log = requests.get(sim.url + "/sim/requests", timeout=5).json()["requests"]
    prefix = "/sandboxnew" if sandbox else ""
    calls = [e for e in log if e["path"] == prefix + "/pay/unifiedorder"]
    assert calls and calls[-1]["signature"] == "ok"
    if sandbox:
        assert pay.sandbox_api_key != DEMO_API_KEY and len(pay.sandbox_api_key) == 32
        assert any(e["path"] == "/sandboxnew/pay/getsignkey" for e in log)


@pytest.mark.filterwarnings("ignore:`_get` method of `WeChatClient` is deprecated")
def test_wechatpy_login_client_exchanges_a_code(sim):
    client = WeChatClient(DEMO_APPID, DEMO_SECRET, timeout=5)
    client.wxa.API_BASE_URL = sim.url + "/"
    token = client._fetch_access_token(sim.url + "/cgi-bin/token", {
        "grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET})
    assert token["expires_in"] == 7200 and client.access_token == token["access_token"]
    login = sim_login(sim, "sdk-login")
    session = client.wxa.code_to_session(login["code"])
    assert session["openid"] == login["openid"] and len(session["session_key"]) == 24
    with pytest.raises(WeChatClientException) as err:
        client.wxa.code_to_session(login["code"])
    assert err.value.errcode == 40163
    other = WeChatClient(DEMO_APPID, DEMO_SECRET, access_token="user-provided", timeout=5)
    other.wxa.API_BASE_URL = sim.url + "/"
    assert other.wxa.code_to_session(sim_login(sim, "x")["code"])["openid"]
