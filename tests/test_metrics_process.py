"""GET /metrics of run_server.py --processes 2 on PostgreSQL, as real processes: one scrape
counts every order whichever process served it, on METRICS_LISTEN's address without a token,
and still does after a process is killed and replaced."""
import concurrent.futures
import os
import signal
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ADMIN_TOKEN
from tests.support.processes import Proc, free_port
from tests.support.shop import Shop, backend_env

pytestmark = pytest.mark.e2e
ORDERS, CLIENTS = 24, 4


class MetricsShop(Shop):
    """The simulator, and run_server.py --processes 2 with METRICS_LISTEN and METRICS_DIR."""

    def __init__(self, tmp_path, database_url):
        super().__init__(tmp_path)
        self.database_url, self.metrics_dir = database_url, str(tmp_path / "metrics")
        self.metrics_url = None

    def start_backend(self):
        port, metrics_port = free_port(), free_port()
        env = dict(backend_env(self.sim.url, port, "MD5"), ADMIN_TOKEN=ADMIN_TOKEN, SWEEP_INTERVAL="0",
                   METRICS_LISTEN="127.0.0.1:%d" % metrics_port, METRICS_DIR=self.metrics_dir)
        self.backend = Proc("run_server.py", ["--port", str(port), "--database-url", self.database_url,
                                              "--processes", "2"], env=env, port=port)
        self.metrics_url = "http://127.0.0.1:%d/metrics" % metrics_port

    def scrape(self):
        """{name: value} of the unlabelled samples and unifiedorder's calls, on a new connection."""
        r = requests.get(self.metrics_url, timeout=10, headers={"Connection": "close"})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
        found = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if not s.labels or s.labels == {"endpoint": "unifiedorder", "outcome": "ok"}:
                    found[s.name] = s.value
        return found


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


@pytest.fixture(scope="module")
def shop(tmp_path_factory, postgres_server):
    s = MetricsShop(tmp_path_factory.mktemp("metrics"), postgres_server.create_schema("metrics_shop")).start()
    yield s
    s.stop()


def buy(shop, count):
    """`count` orders by one user over one keep-alive connection of its own."""
    session = requests.Session()
    r = session.post(shop.backend.url + "/api/login", json={"code": shop.wx_login("user%d" % count)}, timeout=10)
    auth = {"Authorization": "Bearer " + r.json()["token"]}
    for _ in range(count):
        r = session.post(shop.backend.url + "/api/orders", json={"product_id": "coffee"}, headers=auth, timeout=10)
        assert r.status_code == 201, r.text
    session.close()


def test_one_scrape_counts_the_orders_of_every_process(shop):
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda _: buy(shop, ORDERS // CLIENTS), range(CLIENTS)))
    for _ in range(4):   # a new connection each: whichever process answers, it counts them all
        found = shop.scrape()
        assert found["wxpay_orders_created_total"] == ORDERS
        assert found["wxpay_wechat_call_seconds_count"] == ORDERS
    assert requests.get(shop.backend.url + "/metrics", timeout=10,
                        headers={"Authorization": "Bearer " + ADMIN_TOKEN}).status_code == 404


def test_a_killed_process_still_counts_and_its_gauges_are_dropped(shop):
    before = children(shop.backend.proc.pid)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while len(set(children(shop.backend.proc.pid)) - set(before)) < 1:
        assert time.monotonic() < deadline, "no replacement process"
        time.sleep(0.05)
    assert not [n for n in os.listdir(shop.metrics_dir) if n.startswith("gauge_live") and n.endswith("_%d.db" % victim)]
    assert shop.scrape()["wxpay_orders_created_total"] == ORDERS
