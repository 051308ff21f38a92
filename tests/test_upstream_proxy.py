"""The backend reaching WeChat through a real proxy process (proxy.py, pinned): HTTPS through
an authenticated CONNECT tunnel, plain HTTP in absolute form, NO_PROXY, and the proxy's
credentials never in a log line or an answer."""
import pytest
import requests

from tests.support import DEMO
from tests.support.processes import Proc, free_port
from tests.support.shop import backend_env
from tests.support.sim import wait_output

pytestmark = pytest.mark.e2e

USER, PASSWORD = "shop", "pr0xy-s3cret"


@pytest.fixture(scope="module")
def proxy():
    port = free_port()
    p = Proc("proxy", ["--hostname", "127.0.0.1", "--port", str(port),
                              "--basic-auth", "%s:%s" % (USER, PASSWORD), "--num-workers", "1",
                              "--num-acceptors", "1"], port=port, module=True)
    yield p
    p.stop()


def through(proxy, password=PASSWORD):
    return "http://%s:%s@127.0.0.1:%d" % (USER, password, proxy.port)


def buy(backend, sim_url, ca=None):
    code = requests.post(sim_url + "/sim/login", json={"appid": DEMO["appid"], "user": "proxied"},
                         timeout=5, verify=ca or True).json()["code"]
    r = requests.post(backend.url + "/api/login", json={"code": code}, timeout=15)
    if r.status_code != 200:
        return r
    auth = {"Authorization": "Bearer " + r.json()["token"]}
    return requests.post(backend.url + "/api/orders", json={"product_id": "tea"}, headers=auth, timeout=15)


def test_https_to_wechat_through_an_authenticated_connect_tunnel(proxy, tmp_path):
    sim_port, port = free_port(), free_port()
    tls_dir = tmp_path / "tls"
    with Proc("run_simulator.py", ["--port", str(sim_port), "--tls", "--tls-dir", str(tls_dir)], port=sim_port):
        sim_url = "https://127.0.0.1:%d" % sim_port
        env = dict(backend_env(sim_url, port, "MD5"), WECHAT_PROXY=through(proxy), WECHAT_CA_FILE=str(tls_dir / "ca.pem"),
                   DATABASE_URL="sqlite:///%s" % (tmp_path / "p.db"), SWEEP_INTERVAL="0", LOG_LEVEL="DEBUG")
        with Proc("run_server.py", ["--port", str(port)], env=env, port=port) as backend:
            r = buy(backend, sim_url, str(tls_dir / "ca.pem"))
            assert r.status_code == 201, r.text
            assert PASSWORD not in backend.output()
        # the proxy writes its access line when the tunnel closes: when the backend stopped
        wait_output(proxy, "CONNECT 127.0.0.1:%d" % sim_port)
        with Proc("run_server.py", ["--port", str(port)], port=port,
                  env=dict(env, WECHAT_PROXY=through(proxy, "wrong-password"))) as refused:
            r = buy(refused, sim_url, str(tls_dir / "ca.pem"))
            assert r.status_code == 502 and r.json()["error"]["code"] == "UPSTREAM_ERROR"
            assert "wrong-password" not in refused.output() and "wrong-password" not in r.text
    assert "ProxyAuthenticationFailed" in proxy.output()


def test_plain_http_through_the_proxy_and_no_proxy(proxy, tmp_path):
    sim_port, port = free_port(), free_port()
    with Proc("run_simulator.py", ["--port", str(sim_port)], port=sim_port) as sim:
        env = dict(backend_env(sim.url, port, "MD5"), HTTP_PROXY=through(proxy),
                   DATABASE_URL="sqlite:///%s" % (tmp_path / "p.db"), SWEEP_INTERVAL="0")
        with Proc("run_server.py", ["--port", str(port)], env=env, port=port) as backend:
            assert buy(backend, sim.url).status_code == 201
        wait_output(proxy, "GET 127.0.0.1:%d/sns/jscode2session" % sim_port)   # the absolute form
        before = proxy.output().count("127.0.0.1:%d" % sim_port)
        with Proc("run_server.py", ["--port", str(port)], port=port,
                  env=dict(env, NO_PROXY="127.0.0.1,localhost")) as direct:
            assert buy(direct, sim.url).status_code == 201
        assert proxy.output().count("127.0.0.1:%d" % sim_port) == before   # bypassed
