"""The simulator's Host check (DNS rebinding): /sim/ answers only loopback names, the address it
listens on and names allowed explicitly; WeChat's own paths answer any Host. In process, and
with real run_simulator.py / run_server.py --simulator processes."""
import json
import subprocess
import sys

import pytest
import requests

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.processes import ROOT, Proc, free_port
from tests.support.sim import (DEMO_APPID, DEMO_MCH_ID, order_fields, post_xml, signed_xml,
                               stop_simulator, wait_output)

FAULT = json.dumps({"path": "/pay/unifiedorder", "kind": "drop"})


def make(**hosts):
    return make_app(State(SimConfig.demo(), time_scale=0.001), notify_timeout=2.0, **hosts)


@pytest.fixture
def app(io_loop, request):
    """The simulator; a test may pass make_app's listen_host and allow_hosts (indirectly)."""
    application = make(**getattr(request, "param", {}))
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def fetch(http_client, base, path, host, method="GET", body=None, origin=None):
    headers = {"Host": host}
    if origin:
        headers["Origin"] = origin
    if method in ("POST", "PUT") and body is None:
        body = ""
    return await http_client.fetch(base + path, method=method, body=body, headers=headers,
                                   raise_error=False)


def refused(resp):
    return resp.code == 403 and json.loads(resp.body)["error"]["code"] == "HOST_NOT_ALLOWED"


@pytest.mark.gen_test
async def test_a_rebound_page_cannot_reset_the_simulator(http_client, base, app, http_port):
    """A page at rebind.test whose name now resolves to 127.0.0.1 is same-origin with itself:
    its Origin matches its Host. The Host is not the simulator's: refused, nothing forgotten."""
    app.sim_state.add_fault("/pay/unifiedorder", "drop", None, 1.0, None)
    host = "rebind.test:%d" % http_port
    resp = await fetch(http_client, base, "/sim/reset", host, "POST", "{}", origin="http://" + host)
    assert refused(resp), resp.body
    assert "rebind.test" in json.loads(resp.body)["error"]["message"]
    assert len(app.sim_state.faults) == 1


@pytest.mark.gen_test
async def test_a_foreign_host_reads_and_changes_nothing_under_sim(http_client, base, app, http_port):
    host = "rebind.test:%d" % http_port
    for path in ("/sim/console/state", "/sim/console", "/sim/console/static/console.js",
                 "/sim/orders", "/sim/requests", "/sim/config", "/sim/faults", "/sim/nothing-here"):
        resp = await fetch(http_client, base, path, host)
        assert refused(resp), path
    for path, body in (("/sim/faults", FAULT), ("/sim/clock", '{"advance": 100}'),
                       ("/sim/login", json.dumps({"appid": DEMO_APPID, "user": "u"})),
                       ("/sim/pay", "{}")):
        resp = await fetch(http_client, base, path, host, "POST", body, origin="http://" + host)
        assert refused(resp), path
        resp = await fetch(http_client, base, path, host, "POST", body)    # no Origin either
        assert refused(resp), path
    resp = await fetch(http_client, base, "/sim/faults", host, "DELETE")
    assert refused(resp)
    state = app.sim_state
    assert state.faults == [] and state.clock.offset == 0 and not state.codes
    assert state.requests == type(state.requests)()      # /sim/pay logged nothing either


@pytest.mark.gen_test
async def test_wechat_paths_answer_any_host(http_client, base, app):
    """SDKs rewrite hosts in many ways (a proxy, a hosts-file name for api.mch.weixin.qq.com)."""
    for prefix in ("", "/sandboxnew"):
        fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "out_trade_no": "NOPE",
                  "nonce_str": "n0nce"}
        resp, data = await post_xml(http_client, base + prefix + "/pay/orderquery",
                                    signed_xml(fields), headers={"Host": "api.mch.weixin.qq.com"})
        assert resp.code == 200 and data["return_code"] in ("SUCCESS", "FAIL"), resp.body
    resp = await fetch(http_client, base, "/sns/jscode2session?appid=x&secret=y&js_code=z",
                       "api.weixin.qq.com")
    assert resp.code == 200 and "errcode" in json.loads(resp.body)
    resp = await fetch(http_client, base, "/cgi-bin/token?grant_type=client_credential",
                       "rebind.test")
    assert resp.code == 200 and "errcode" in json.loads(resp.body)


@pytest.mark.gen_test
async def test_loopback_names_are_allowed(http_client, base, app, http_port):
    for host in ("127.0.0.1:%d" % http_port, "127.0.0.1", "127.4.5.6:%d" % http_port,
                 "localhost:%d" % http_port, "LocalHost", "localhost.:%d" % http_port,
                 "console.localhost:%d" % http_port, "[::1]:%d" % http_port, "[::1]", "[::ffff:7f00:1]"):
        resp = await fetch(http_client, base, "/sim/console/state", host)
        assert resp.code == 200, (host, resp.body)
    host = "localhost:%d" % http_port
    resp = await fetch(http_client, base, "/sim/faults", host, "POST", FAULT, origin="http://" + host)
    assert resp.code == 201
    assert len(app.sim_state.faults) == 1


@pytest.mark.gen_test
async def test_names_that_only_look_local_are_refused(http_client, base, app, http_port):
    for host in ("localhost.rebind.test", "127.0.0.1.rebind.test", "rebind.test", "evil-localhost",
                 "0x7f.1", "2130706433", "[::2]", "10.0.0.1", ""):
        resp = await fetch(http_client, base, "/sim/config", host)
        assert refused(resp), host


def test_malformed_host_values_are_not_loopback():
    """Tornado answers these 400 before routing; the policy refuses them on its own too."""
    from simulator.hosts import HostPolicy
    policy = HostPolicy("127.0.0.1")
    for host in ("localhost:9000:1", "local host", "[::1", "[::1]x", "localhost:-1", "::1",
                 "127.0.0.1:99999999", None):
        assert not policy.allows(host), host


@pytest.mark.gen_test
@pytest.mark.parametrize("app", [{"listen_host": "192.0.2.7",
                                  "allow_hosts": ["Tunnel.Example", "[2001:db8::5]"]}],
                         indirect=True)
async def test_the_listen_address_and_allowed_names_are_allowed(http_client, base, app, http_port):
    for host in ("192.0.2.7:%d" % http_port, "tunnel.example", "TUNNEL.EXAMPLE:443",
                 "tunnel.example.", "[2001:db8::5]:9000", "[2001:0db8:0:0::5]", "localhost"):
        resp = await fetch(http_client, base, "/sim/config", host)
        assert resp.code == 200, host
    for host in ("other.example", "sub.tunnel.example", "192.0.2.8"):
        resp = await fetch(http_client, base, "/sim/config", host)
        assert refused(resp), host


def test_listening_on_every_interface_allows_loopback_and_its_own_address_only():
    """0.0.0.0 and :: do not allow every name: LAN addresses and tunnels need allow_hosts."""
    from simulator.hosts import HostPolicy
    for listen in ("0.0.0.0", "::", ""):
        policy = HostPolicy(listen)
        assert policy.allows("localhost:9000") and policy.allows("127.0.0.1")
        assert not policy.allows("192.168.1.5:9000") and not policy.allows("rebind.test")
    assert HostPolicy("0.0.0.0").allows("0.0.0.0:9000")        # the banner's URL
    assert HostPolicy("::").allows("[::]:9000")
    assert HostPolicy("0.0.0.0", ["192.168.1.5"]).allows("192.168.1.5:9000")


@pytest.mark.parametrize("name", ["", "a b", "http://x.test/", "x.test/path", "*", "[::1",
                                  "x.test:port"])
def test_bad_allowed_names_are_refused(name):
    from simulator.hosts import HostPolicy
    with pytest.raises(ValueError):
        HostPolicy("127.0.0.1", [name])


# --- processes ---------------------------------------------------------------------------------

def test_run_simulator_allow_host():
    port = free_port()
    args = ["--port", str(port), "--time-scale", "0.001", "--allow-host", "tunnel.test",
            "--allow-host", "192.0.2.9"]
    with Proc("run_simulator.py", args, port=port) as proc:
        out = wait_output(proc, "control plane")
        assert "tunnel.test" in out and "192.0.2.9" in out
        url = proc.url
        sim = requests.Session()
        for host in ("tunnel.test:%d" % port, "192.0.2.9", "localhost:%d" % port):
            assert sim.get(url + "/sim/config", headers={"Host": host}, timeout=5).status_code == 200
        sim.post(url + "/sim/faults", data=FAULT, timeout=5).raise_for_status()
        rebound = {"Host": "rebind.test:%d" % port, "Origin": "http://rebind.test:%d" % port}
        r = sim.post(url + "/sim/reset", headers=rebound, timeout=5)
        assert r.status_code == 403 and r.json()["error"]["code"] == "HOST_NOT_ALLOWED"
        r = sim.get(url + "/sim/console/state", headers=rebound, timeout=5)
        assert r.status_code == 403
        assert len(sim.get(url + "/sim/faults", timeout=5).json()["faults"]) == 1
        r = sim.post(url + "/pay/orderquery", data=b"<xml></xml>", headers=rebound, timeout=5)
        assert r.status_code == 200 and b"<return_code>" in r.content
        r = sim.get(url + "/v3/certificates", headers=rebound, timeout=5)     # v3: WeChat's 401
        assert r.status_code == 401 and r.json()["code"] == "SIGN_ERROR"
        assert "Traceback" not in proc.output()


def test_run_simulator_help_and_bad_allow_host():
    out = subprocess.run([sys.executable, "run_simulator.py", "--help"], cwd=ROOT, text=True,
                         capture_output=True, timeout=30).stdout
    assert "--allow-host" in out
    done = subprocess.run([sys.executable, "run_simulator.py", "--allow-host", "http://x.test/"],
                          cwd=ROOT, text=True, capture_output=True, timeout=30)
    assert done.returncode == 2 and "--allow-host" in done.stderr and "Traceback" not in done.stderr


def test_bundled_simulator_allow_host(tmp_path):
    """run_server.py --simulator: loopback names reach its /sim/ (the demo, DevTools), and a
    tunnel's name through --simulator-allow-host."""
    port, sim_port = free_port(), free_port()
    args = ["--simulator", "--port", str(port), "--simulator-port", str(sim_port),
            "--database-url", "sqlite:///%s" % (tmp_path / "h.db"),
            "--simulator-tls-dir", str(tmp_path / "tls"), "--simulator-allow-host", "tunnel.test"]
    with Proc("run_server.py", args, port=port, env={"ADMIN_TOKEN": "t" * 32}) as server:
        ca = str(tmp_path / "tls" / "ca.pem")     # per call: REQUESTS_CA_BUNDLE beats Session.verify
        url = "https://127.0.0.1:%d" % sim_port
        for host in ("127.0.0.1:%d" % sim_port, "localhost:%d" % sim_port, "tunnel.test"):
            r = requests.post(url + "/sim/login", json={"user": "u"}, headers={"Host": host},
                              verify=ca, timeout=5)
            assert r.status_code == 200, (host, r.text)
        r = requests.get(url + "/sim/console/state", headers={"Host": "rebind.test"}, verify=ca,
                         timeout=5)
        assert r.status_code == 403 and r.json()["error"]["code"] == "HOST_NOT_ALLOWED"
        assert server.stop() == 0
        assert "Traceback" not in server.output()
