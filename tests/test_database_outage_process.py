"""The backend on PostgreSQL through database outages, as real processes (run_simulator.py as
WeChat, run_server.py, a PostgreSQL server of the test's own): PostgreSQL killed or stopped
under load answers 503 STORE_UNAVAILABLE, never 500, and orders are created again once it is
back."""
import collections
import threading
import time

import pytest
import requests

from tests.support.postgres import PostgresServer
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e

# what a buyer may hear while PostgreSQL stops and starts: the order, or "storage unavailable"
# (a request that reached the store during the outage; the Mini Program tries again)
ALLOWED = {(201, None), (503, "STORE_UNAVAILABLE")}


class PostgresShop(Shop):
    """run_simulator.py and run_server.py on a PostgreSQL database."""

    def __init__(self, tmp_path, database_url, *args, **env):
        super().__init__(tmp_path)
        self.database_url, self.args, self.env = database_url, args, env

    def start_backend(self):
        from tests.support.processes import Proc, free_port
        from tests.support.shop import backend_env
        port = free_port()
        env = dict(backend_env(self.sim.url, port, self.sign_type), SWEEP_INTERVAL="0", **self.env)
        self.backend = Proc("run_server.py", ["--port", str(port), "--database-url", self.database_url, *self.args],
                            env=env, port=port)


class Buyers:
    """Mini Program users creating orders in threads until stopped; every answer recorded as
    (monotonic time, status, error code), every request that got no answer as its exception."""

    def __init__(self, shop, users=8):
        self.url = shop.backend.url + "/api/orders"
        self.auths = [shop.login("outage-%d" % i) for i in range(users)]
        self.answers, self.failures = [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(auth,)) for auth in self.auths]

    def run(self, auth):
        with requests.Session() as http:
            while not self.stop.is_set():
                try:
                    r = http.post(self.url, json={"product_id": "coffee"}, headers=auth, timeout=15)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                    continue
                code = None if r.status_code == 201 else r.json().get("error", {}).get("code")
                self.answers.append((time.monotonic(), r.status_code, code))

    def count(self, status, since):
        return sum(1 for at, s, _ in list(self.answers) if s == status and at >= since)

    def wait_for(self, status, since, n, timeout=15):
        """Until `n` answers with `status` came after `since`; False after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.count(status, since) < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture
def own_postgres(postgres_server):
    """A PostgreSQL server the test may stop, not the session's (`postgres_server` only decides
    whether PostgreSQL tests run here at all)."""
    own = PostgresServer().start()
    yield own
    own.stop()


@pytest.fixture
def shop(tmp_path, own_postgres):
    s = PostgresShop(tmp_path, own_postgres.create_schema("outage")).start()
    yield s
    s.stop()


def test_postgresql_killed_and_stopped_under_load_is_503_never_500(shop, own_postgres):
    """Eight buyers creating orders while PostgreSQL is killed (SIGKILL of the postmaster),
    stopped (pg_ctl -m fast) and stopped at once (pg_ctl -m immediate), each time started
    again: every answer is 201 or 503 STORE_UNAVAILABLE, and orders are created again after
    each restart."""
    with Buyers(shop) as buyers:
        since = time.monotonic()
        for how in ("kill", "fast", "immediate"):
            assert buyers.wait_for(201, since, 20), "no orders created after the restart before %s" % how
            stopped = time.monotonic()
            own_postgres.kill() if how == "kill" else own_postgres.pause(how)
            assert buyers.wait_for(503, stopped, 8), "the outage (%s) was not seen" % how
            since = time.monotonic()
            own_postgres.resume()
        assert buyers.wait_for(201, since, 20), "no orders created after the last restart"
    answers = collections.Counter((status, code) for _, status, code in buyers.answers)
    print("\nanswers over three outages: %d, %s" % (len(buyers.answers), dict(answers)))
    assert buyers.failures == []
    output = shop.backend.output()
    assert set(answers) <= ALLOWED, (dict(answers), output[output.find("Traceback"):][:3000])
