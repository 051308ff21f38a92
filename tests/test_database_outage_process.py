"""The backend on PostgreSQL through database outages, as real processes (run_simulator.py as
WeChat, run_server.py, a PostgreSQL server of the test's own): PostgreSQL killed or stopped
under load answers 503 STORE_UNAVAILABLE, never 500, and orders are created again once it is
back; started before its database (a container, a systemd unit), the backend waits for it
(DATABASE_WAIT), then serves, or gives up in one line."""
import collections
import os
import subprocess
import sys
import time

import pytest
import requests

from tests.support import ADMIN_TOKEN, DEMO
from tests.support.postgres import PostgresServer
from tests.support.processes import ROOT, Proc, free_port
from tests.support.shop import Shop, Users

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


class Buyers(Users):
    """Mini Program users creating orders in threads until stopped; every answer recorded as
    (monotonic time, status, error code), every request that got no answer as its exception."""
    join_timeout = 30

    def __init__(self, shop, users=8):
        self.url = shop.backend.url + "/api/orders"
        self.answers, self.failures = [], []
        super().__init__(shop, users, "outage")

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


@pytest.fixture(scope="module")
def module_postgres(postgres_server):
    """A PostgreSQL server this module's tests may stop, not the session's (`postgres_server`
    only decides whether PostgreSQL tests run here at all); one for the module: a start costs
    an initdb."""
    own = PostgresServer().start()
    yield own
    own.stop()


@pytest.fixture
def own_postgres(module_postgres):
    """The module's server, running (each test leaves it running; one that failed half-way
    may not have: then it is started again, so the next test does not fail for it)."""
    try:
        module_postgres.psql("SELECT 1")
    except Exception:
        module_postgres.resume()
    return module_postgres


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
    # the outages in the log: a line as each starts and one as it ends, nothing per request
    assert output.count("database unavailable: ") == output.count("database available again after ") == 3, output
    assert "Traceback" not in output and "StoreError" not in output, output


def standalone(database_url, **env):
    """run_server.py's environment without WeChat (these tests never reach it)."""
    return dict({"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
                 "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
                 "WECHAT_NOTIFY_URL": "http://127.0.0.1:8000/wechat/pay/notify",
                 "DATABASE_URL": database_url, "SWEEP_INTERVAL": "0", "ADMIN_TOKEN": ADMIN_TOKEN}, **env)


def wait_output(proc, text, timeout=20):
    deadline = time.monotonic() + timeout
    while text not in proc.output():
        assert proc.proc.poll() is None, "ended with %s:\n%s" % (proc.proc.returncode, proc.output())
        assert time.monotonic() < deadline, "no %r within %ss:\n%s" % (text, timeout, proc.output())
        time.sleep(0.05)


def wait_healthy(proc, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.proc.poll() is None, "ended with %s:\n%s" % (proc.proc.returncode, proc.output())
        try:
            if requests.get(proc.url + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no /healthz 200 within %ss:\n%s" % (timeout, proc.output())
        time.sleep(0.1)


@pytest.mark.parametrize("args", [[], ["--processes", "2"]], ids=["one-process", "two-processes"])
def test_started_before_its_database_the_backend_waits_then_serves(own_postgres, args):
    """The database comes up after the backend (both started together): the backend (the
    supervisor, with --processes) says once per attempt that it is waiting, then serves."""
    url = own_postgres.create_schema("late_%d" % len(args))   # the module's server: a schema per case
    own_postgres.pause()
    port = free_port()
    backend = Proc("run_server.py", ["--port", str(port), *args], env=standalone(url), port=port, wait_port=False)
    try:
        wait_output(backend, "not reachable")
        own_postgres.resume()
        wait_healthy(backend)
        r = requests.get(backend.url + "/admin/refunds", headers={"Authorization": "Bearer " + ADMIN_TOKEN},
                         timeout=5)
        assert r.status_code == 200, r.text
        output = backend.output()
        waited = [line for line in output.splitlines() if "not reachable" in line]
        assert waited[0].endswith("retrying in 0.5s (attempt 1, up to 30 s)"), output
        assert "database postgresql://postgres@127.0.0.1:%d/postgres not reachable (" % own_postgres.port in waited[0]
        assert "Traceback" not in output, output
    finally:
        backend.stop(timeout=15)


@pytest.mark.parametrize("args", [[], ["--processes", "2"], ["--migrate"]])
def test_a_database_that_never_comes_is_one_line_and_exit_2(args):
    """DATABASE_WAIT=1 and nothing listening: a line per attempt, then one naming the database
    (never its password), exit code 2, no traceback."""
    url = "postgresql://shop:pw-0123456789@127.0.0.1:%d/payments" % free_port()
    done = subprocess.run([sys.executable, "run_server.py", "--port", str(free_port()), *args], cwd=ROOT,
                          env=dict(os.environ, **standalone(url, DATABASE_WAIT="1")),
                          capture_output=True, text=True, timeout=30)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, lines
    waits, last = lines[:-1], lines[-1]
    assert waits and all(" not reachable (" in line and "; retrying in " in line for line in waits), lines
    assert last.startswith("run_server.py: cannot open the database postgresql://shop@127.0.0.1:"), lines
    assert last.endswith("(still not reachable after 1 s)"), lines
    assert "pw-0123456789" not in done.stdout + done.stderr
