"""Several backend processes on one PostgreSQL (issue 14), as real processes: run_simulator.py
--tls, run_server.py --processes 2 and a second run_server.py (another "host"), one database.

Identical notifications spread over the processes make one transition; concurrent refunds
through both never exceed the paid amount; a process killed under load loses nothing that
was acknowledged; SIGTERM drains every process; the schema is migrated from empty and from
the previous version by `run_server.py --migrate`, also by several at once."""
import asyncio
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import asyncpg
import pytest
import requests

from server.store.postgres.schema import SCHEMA_VERSION
from server.wechat.v2 import wire as wxpay
from tests.support import DEMO
from tests.support.api import notification
from tests.support.processes import ROOT
from tests.support.shop import ADMIN, TLSShop

pytestmark = pytest.mark.e2e


def query(url, sql, *args):
    async def run():
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return run_async(run())


def run_async(coroutine):
    """The coroutine on a loop of its own, closed after; the thread's current loop (one an
    in-process test module run before this one may have left set) is not touched."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def events(url, no):
    return query(url, "SELECT from_status, to_status, source FROM order_events WHERE out_trade_no = $1 ORDER BY id", no)


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


class Shops(TLSShop):
    """The simulator, backend A (--processes 2) and backend B (one process) on one database."""

    def __init__(self, tmp_path, database_url):
        super().__init__(tmp_path)
        self.database_url = database_url
        self.others = []

    def start_backend(self):
        self.backend = self.backend_process(self.database_url, "--processes", "2", SWEEP_INTERVAL="0")
        self.others = [self.backend_process(self.database_url, SWEEP_INTERVAL="0")]

    def stop(self):
        for proc in self.others:
            proc.stop()
        super().stop()

    def notify(self, url, order, transaction_id):
        body = wxpay.signed_xml(notification(order, transaction_id=transaction_id), DEMO["api_key"], "MD5")
        r = requests.post(url + "/wechat/pay/notify", data=body, timeout=15)
        return r.status_code, wxpay.from_xml(r.content).get("return_code")


@pytest.fixture(scope="module")
def shops(tmp_path_factory, postgres_server):
    """One set of processes for the tests below, in file order (the last one stops backend A)."""
    s = Shops(tmp_path_factory.mktemp("shops"), postgres_server.create_schema("scaleout_shops")).start()
    yield s
    s.stop()


def test_fifty_identical_notifications_over_three_processes_make_one_transition(shops):
    auth = shops.login()
    order = shops.create(auth)
    urls = [shops.backend.url, shops.others[0].url]
    with concurrent.futures.ThreadPoolExecutor(25) as pool:
        answers = list(pool.map(lambda i: shops.notify(urls[i % 2], order, "4200000000202612020000000042"),
                                range(50)))
    assert answers == [(200, "SUCCESS")] * 50
    assert events(shops.database_url, order["out_trade_no"]) == [
        (None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]
    for url in urls:
        view = requests.get(url + "/api/orders/" + order["out_trade_no"], headers=auth, timeout=10).json()
        assert view["status"] == "SUCCESS"


def test_concurrent_refunds_through_both_backends_never_exceed_the_paid_amount(shops):
    auth = shops.login()
    order = shops.create(auth, {"product_id": "cake"})       # 2600 fen
    no = order["out_trade_no"]
    assert shops.pay(order["payment"]).status_code == 200
    shops.wait_status(auth, no, "SUCCESS")
    urls = [shops.backend.url, shops.others[0].url]

    def refund(i):
        return requests.post(urls[i % 2] + "/admin/orders/%s/refunds" % no, json={"refund_fee": 200},
                             headers=ADMIN, timeout=15)
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(refund, range(40)))
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 409]
    assert len(accepted) == 13 and len(refused) == 27, [(a.status_code, a.text[:80]) for a in answers]
    assert {a.json()["error"]["code"] for a in refused} == {"REFUND_EXCEEDS_PAID"}
    stored = query(shops.database_url, "SELECT sum(refund_fee), count(*) FROM refunds WHERE out_trade_no = $1", no)
    assert stored == [(2600, 13)]
    sim_refunds = shops.simulator("GET", "/sim/refunds?out_trade_no=" + no).json()["refunds"]
    assert len(sim_refunds) == 13


def test_a_process_killed_under_load_loses_nothing_acknowledged(shops):
    """SIGKILL one of backend A's processes while orders are created and paid through A: every
    201 and every SUCCESS answer that reached us is in the database afterwards, the killed
    process is replaced, and the survivors go on answering."""
    auth = shops.login()
    created, paid, errors = [], [], []
    stop = threading.Event()

    def work():
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.post(shops.backend.url + "/api/orders", json={"product_id": "coffee"}, headers=auth, timeout=10)
                if r.status_code != 201:
                    errors.append(r.status_code)
                    continue
                order = r.json()
                created.append(order["out_trade_no"])
                body = wxpay.signed_xml(notification(order, transaction_id="42%026d" % len(created)),
                                        DEMO["api_key"], "MD5")
                n = s.post(shops.backend.url + "/wechat/pay/notify", data=body, timeout=10)
                if n.status_code == 200 and wxpay.from_xml(n.content).get("return_code") == "SUCCESS":
                    paid.append(order["out_trade_no"])
            except requests.RequestException as exc:   # the killed process's connections
                errors.append(type(exc).__name__)
                s = requests.Session()
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while len(paid) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = children(shops.backend.proc.pid)
        assert len(before) == 2, before
        os.kill(before[0], signal.SIGKILL)
        at_kill = len(paid)
        while len(paid) < at_kill + 30 and time.monotonic() < deadline + 20:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert len(paid) >= at_kill + 30, "the surviving process stopped answering"
    deadline = time.monotonic() + 5                          # replaced after a short back-off
    while len(children(shops.backend.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = children(shops.backend.proc.pid)
    assert len(after) == 2 and before[0] not in after, (before, after)
    assert "ended (signal SIGKILL); starting another" in shops.backend.output()
    stored = dict(query(shops.database_url, "SELECT out_trade_no, status FROM orders WHERE out_trade_no = ANY($1)",
                        created))
    assert set(created) <= set(stored)
    assert {no: stored[no] for no in paid} == {no: "SUCCESS" for no in paid}


def test_sigterm_drains_every_process(shops):
    """Orders in flight in both of backend A's processes (WeChat answers after 1.5 s) when the
    supervisor gets SIGTERM: each is answered 201, then every process exits."""
    shops.simulator("POST", "/sim/faults", json={"path": "/pay/unifiedorder", "kind": "latency", "value": 1500})
    auth = shops.login()
    pids = children(shops.backend.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(requests.post, shops.backend.url + "/api/orders", json={"product_id": "tea"},
                               headers=auth, timeout=15) for _ in range(8)]
        time.sleep(0.7)
        shops.backend.proc.send_signal(signal.SIGTERM)
        codes = [f.result().status_code for f in futures]
    assert codes == [201] * 8
    assert shops.backend.proc.wait(15) == 0
    for pid in pids:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    assert shops.backend.output().count("draining requests in flight") == 2


def migrate(url):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "run_server.py"), "--migrate", "--database-url", url],
                            cwd=ROOT, env=dict(os.environ, **standalone()), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def standalone():
    return {"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"], "WECHAT_MCH_ID": DEMO["mch_id"],
            "WECHAT_API_KEY": DEMO["api_key"], "WECHAT_NOTIFY_URL": "http://127.0.0.1:8000/wechat/pay/notify"}


def test_migrate_from_empty_by_three_processes_at_once(postgres_url):
    procs = [migrate(postgres_url) for _ in range(3)]
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all("is at the current schema" in out for out in outputs)
    assert sum("migrated from schema 0 to %d" % SCHEMA_VERSION in out for out in outputs) == 1
    assert query(postgres_url, "SELECT version FROM schema_version ORDER BY version") == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_migrate_from_the_previous_version(postgres_url):
    import asyncpg
    from server.store.postgres.store import PostgresStore

    async def previous_release():   # schema 4, and a v3 order as that release wrote it
        store = PostgresStore(postgres_url)
        await store.open(schema_version=4)
        await store.close()
        conn = await asyncpg.connect(postgres_url)
        await conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, quantity, body, total_fee, sign_type,"
                           " status, created_at, updated_at) VALUES ('OLD1', 'o', 'tea', 1, 'Tea', 800, 'RSA',"
                           " 'SUCCESS', 1, 1)")
        await conn.close()
    run_async(previous_release())
    out = migrate(postgres_url).communicate(timeout=30)[0]
    assert "migrated from schema 4 to %d" % SCHEMA_VERSION in out and "is at the current schema" in out
    assert query(postgres_url, "SELECT version FROM schema_version ORDER BY version") == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert query(postgres_url, "SELECT status, pay_version FROM orders WHERE out_trade_no = 'OLD1'") == [
        ("SUCCESS", "v3")]


def run_server(*args, **env):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "run_server.py"), *args], cwd=ROOT,
                          env=dict(os.environ, **standalone(), **env), capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def test_several_processes_refused_on_sqlite_and_with_the_bundled_simulator(tmp_path):
    code, out = run_server("--processes", "2", "--port", "1", DATABASE_URL="sqlite:///%s" % (tmp_path / "p.db"))
    assert code == 2 and out == ("run_server.py: --processes 2 needs PostgreSQL (DATABASE_URL=postgresql://...): a "
                                 "SQLite file has one writer and this backend keeps it in one process\n")
    code, out = run_server("--processes", "3", "--simulator")
    assert code == 2 and out.splitlines() == ["run_server.py: --processes 3 cannot run the bundled --simulator (its "
                                              "state lives in one process): run run_simulator.py on its own"]
    assert not (tmp_path / "p.db").exists()


def test_an_unreachable_database_stops_start_up_in_one_line_without_its_password():
    """DATABASE_WAIT=0: no waiting for the database (tests/test_database_outage_process.py waits)."""
    from tests.support.processes import free_port
    url = "postgresql://shop:pw-0123456789@127.0.0.1:%d/payments" % free_port()
    for args in (["--processes", "2"], ["--migrate"], []):
        code, out = run_server(*args, DATABASE_URL=url, DATABASE_TIMEOUT="2", DATABASE_WAIT="0")
        assert code == 2, (args, out)
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "run_server.py: cannot open the database postgresql://shop@127.0.0.1:"), (args, out)
        assert "pw-0123456789" not in out


def wait_healthy(proc, port, timeout=20):
    """/healthz answers 200 within `timeout`; AssertionError with the output if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("ended with %s before serving:\n%s" % (proc.returncode, proc.stdout.read()))
        try:
            if requests.get("http://127.0.0.1:%d/healthz" % port, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("no /healthz 200 within %ss" % timeout)


def test_the_supervisor_serves_as_pid_1_of_a_container(postgres_url):
    """In a container without an init process (`docker run image run_server.py --processes 2`,
    a Kubernetes pod) the supervisor is PID 1, so every process it forks sees getppid() == 1
    from its first instruction. drain_if_orphaned() takes that for "the supervisor died
    before prctl" and SIGTERMs the process at once: every process dies at start, the
    supervisor restarted them without end."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                                         capture_output=True).returncode != 0:
        reason = "needs unshare(1) (util-linux) and the right to make a PID namespace (root)"
        if os.environ.get("CI"):
            pytest.fail("cannot run in CI: " + reason)
        pytest.skip(reason)
    from tests.support.processes import free_port
    port = free_port()
    proc = subprocess.Popen([unshare, "--pid", "--mount-proc", "--kill-child", sys.executable,
                             os.path.join(ROOT, "run_server.py"), "--processes", "2", "--port", str(port)],
                            cwd=ROOT, env=dict(os.environ, **standalone(), DATABASE_URL=postgres_url,
                                               SWEEP_INTERVAL="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(proc, port)
        supervisor = children(proc.pid)[0]                       # PID 1 inside the namespace
        assert len(children(supervisor)) == 2
    finally:
        if proc.poll() is None:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        proc.stdout.close()


def test_new_connections_are_refused_while_the_processes_drain(postgres_url):
    """One process stops listening at SIGTERM (a new connection is refused, so nginx or a
    client tries another host at once). With --processes the supervisor keeps its own copy of
    the listening socket open while its processes drain: the kernel goes on completing new
    connections into the backlog, nobody accepts them, and when the last process ends they
    are reset, after up to the drain time, with the request (a POST) already sent."""
    import socket
    from tests.support.processes import Proc, free_port
    hole = socket.socket()                        # WeChat that never answers: logins stay in flight
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    port = free_port()
    backend = Proc("run_server.py", ["--port", str(port), "--processes", "2"], port=port,
                   env=dict(standalone(), DATABASE_URL=postgres_url, SWEEP_INTERVAL="0", WECHAT_TIMEOUT="5",
                            WECHAT_LOGIN_BASE_URL="http://127.0.0.1:%d" % hole.getsockname()[1]))
    inflight, late = [], None
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b'POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                      b'Content-Length: 14\r\n\r\n{"code":"abc"}')
            inflight.append(s)
        time.sleep(0.5)
        backend.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert backend.proc.poll() is None, "nothing was draining: the test proves nothing"
        try:
            late = socket.create_connection(("127.0.0.1", port), 2)
        except ConnectionRefusedError:
            pass
        assert late is None, "a new connection was accepted during the drain (it is reset when the drain ends)"
    finally:
        for s in inflight + ([late] if late else []):
            s.close()
        backend.stop(timeout=15)
        hole.close()


def test_a_crash_during_a_database_outage_does_not_stop_the_host(postgres_server):
    """A process dies (OOM killer, kill -9) while PostgreSQL is restarting or failing over: its
    replacement cannot open the database and exits 2 at once, and so do the next four, all
    within a fraction of a second; the restart budget (5 in 30 s) is spent and the supervisor
    stops the healthy process too and exits. The host then stays down after the database is
    back, where one process would have answered 503 and recovered."""
    from tests.support.postgres import PostgresServer
    from tests.support.processes import Proc, free_port
    own = PostgresServer().start()               # this test stops its database: not the session's
    backend = None
    try:
        url = own.create_schema("outage")
        port = free_port()
        backend = Proc("run_server.py", ["--port", str(port), "--processes", "2"], port=port,
                       env=dict(standalone(), DATABASE_URL=url, SWEEP_INTERVAL="0", DATABASE_TIMEOUT="1"))
        deadline = time.monotonic() + 20
        while backend.output().count(" serving") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = children(backend.proc.pid)
        assert len(before) == 2
        own.pause()
        os.kill(before[0], signal.SIGKILL)
        time.sleep(2)
        assert backend.proc.poll() is None, "the supervisor gave up during a 2 s outage:\n" + backend.output()
        assert before[1] in children(backend.proc.pid), "the healthy process was stopped"
        own.resume()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(children(backend.proc.pid)) < 2:
            time.sleep(0.2)
        assert len(children(backend.proc.pid)) == 2
        assert requests.get(backend.url + "/healthz", timeout=5).status_code == 200
    finally:
        if backend is not None:
            backend.stop(timeout=15)
        own.stop()


def test_sigterm_while_a_process_is_being_replaced_stops_the_replacement_too(postgres_url):
    """The supervisor checks `stopping`, logs 'ended ...; starting another', then forks. A
    SIGTERM whose handler runs in between signals the processes it knows, and then the
    replacement is forked and registered: nobody ever signals it, it serves on, and the
    supervisor waits for it forever (until a second signal; an orchestrator sends SIGKILL
    at the end of its grace period, dropping requests in flight). The window is the log
    write; a slow stderr (a full pipe: journald or a container log driver pushing back)
    widens it, which is how this test hits it every time."""
    from tests.support.processes import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_server.py"), "--processes", "2", "--port",
                             str(port)], cwd=ROOT, env=dict(os.environ, **standalone(), DATABASE_URL=postgres_url,
                                                            SWEEP_INTERVAL="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer = drain = None
    try:
        lines, deadline = [], time.monotonic() + 20
        while sum(b" serving" in line for line in lines) < 2 and time.monotonic() < deadline:
            lines.append(proc.stderr.readline())
        before = children(proc.pid)
        assert len(before) == 2, b"".join(lines)
        writer = os.open("/proc/%d/fd/2" % proc.pid, os.O_WRONLY | os.O_NONBLOCK)   # fill its stderr pipe
        try:
            while True:
                os.write(writer, b"#" * 4096)
        except BlockingIOError:
            pass
        os.kill(before[0], signal.SIGKILL)     # the supervisor wakes, and blocks logging "starting another"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)       # its handler runs now, before the fork
        time.sleep(0.5)
        drain = threading.Thread(target=proc.stderr.read, daemon=True)   # the log drains
        drain.start()
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, "still running 15 s after SIGTERM, serving from %s" % children(proc.pid)
    finally:
        if writer is not None:
            os.close(writer)
        if drain is None:
            drain = threading.Thread(target=proc.stderr.read, daemon=True)
            drain.start()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if drain is not None:
            drain.join(10)
        proc.stderr.close()


def test_the_backend_serves_on_uvloop_and_a_bad_event_loop_is_one_line(tmp_path):
    from tests.support.processes import Proc, free_port
    port = free_port()
    with Proc("run_server.py", ["--port", str(port), "--event-loop", "uvloop"],
              env=dict(standalone(), DATABASE_URL="sqlite:///%s" % (tmp_path / "u.db"), SWEEP_INTERVAL="0"),
              port=port) as backend:
        assert requests.get(backend.url + "/healthz", timeout=5).json() == {"status": "ok"}
        with open("/proc/%d/maps" % backend.proc.pid) as f:
            assert "uvloop" in f.read()
    code, out = run_server("--port", "1", EVENT_LOOP="tokio", DATABASE_URL="sqlite:///%s" % (tmp_path / "x.db"))
    assert code == 2 and out.strip().splitlines() == [
        "run_server.py: invalid configuration: EVENT_LOOP must be one of asyncio, uvloop (got 'tokio')"]
