"""A simulator process and a backend process wired together, and the Mini Program's moves;
the same in WeChat Pay v3 (V3Shop); users buying in threads (Traffic)."""
import json
import os
import sqlite3
import threading
import time

import requests

from tests.support import ADMIN_TOKEN, DEMO
from tests.support.processes import Proc, free_port


def backend_env(sim_url, backend_port, sign_type):
    return {
        "WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
        "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
        "WECHAT_NOTIFY_URL": "http://127.0.0.1:%d/wechat/pay/notify" % backend_port,
        "WECHAT_SIGN_TYPE": sign_type, "WECHAT_LOGIN_BASE_URL": sim_url,
        "WECHAT_PAY_BASE_URL": sim_url, "WECHAT_TIMEOUT": "5",
    }


ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


class Shop:
    """A simulator process and a backend process wired together, plus Mini Program moves."""

    def __init__(self, tmp_path, sign_type="MD5"):
        self.db = str(tmp_path / ("shop-%s.db" % sign_type))
        self.sim = None
        self.sign_type = sign_type
        self.backend = None

    def start(self):
        sim_port = free_port()
        self.sim = Proc("run_simulator.py", ["--port", str(sim_port)], port=sim_port)
        self.start_backend()
        return self

    def start_backend(self):
        port = self.backend.port if self.backend else free_port()
        self.backend = Proc("run_server.py", ["--port", str(port), "--database-url", "sqlite:///" + self.db],
                            env=backend_env(self.sim.url, port, self.sign_type), port=port)

    def stop(self):
        for proc in (self.backend, self.sim):
            if proc:
                proc.stop()

    def wx_login(self, user="alice"):
        r = requests.post(self.sim.url + "/sim/login", json={"appid": DEMO["appid"], "user": user}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["code"]

    def login(self, user="alice"):
        r = requests.post(self.backend.url + "/api/login", json={"code": self.wx_login(user)}, timeout=10)
        assert r.status_code == 200, r.text
        return {"Authorization": "Bearer " + r.json()["token"]}

    def create(self, auth, body=None):
        r = requests.post(self.backend.url + "/api/orders", json=body or {"product_id": "coffee"},
                          headers=auth, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()

    def pay(self, payment):
        return requests.post(self.sim.url + "/sim/pay", json=dict(payment, appid=DEMO["appid"]), timeout=10)

    def order(self, auth, no, refresh=False):
        return requests.get(self.backend.url + "/api/orders/%s%s" % (no, "?refresh=1" if refresh else ""),
                            headers=auth, timeout=10)

    def wait_status(self, auth, no, status, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            view = self.order(auth, no).json()
            if view["status"] == status:
                return view
            assert time.monotonic() < deadline, view
            time.sleep(0.05)

    def rows(self, sql, *args):
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def events(self, no):
        return self.rows("SELECT from_status, to_status, source FROM order_events"
                         " WHERE out_trade_no = ? ORDER BY id", no)

    def refund_events(self, out_refund_no):
        return self.rows("SELECT from_status, to_status, source FROM refund_events"
                         " WHERE out_refund_no = ? ORDER BY id", out_refund_no)

    def notifications(self, no, settled=True, timeout=5):
        """The simulator's notification attempts about an order. settled: wait (bounded) until
        every attempt has its outcome: the backend may have stored and answered a notification
        before the simulator has read that answer."""
        deadline = time.monotonic() + timeout
        while True:
            data = requests.get(self.sim.url + "/sim/notifications", timeout=5).json()["notifications"]
            mine = [n for n in data if n["out_trade_no"] == no]
            if not settled or all(n.get("outcome") != "pending" for n in mine) or time.monotonic() > deadline:
                return mine
            time.sleep(0.02)

    # the admin API (refunds): needs the backend's ADMIN_TOKEN
    def refund(self, no, body):
        return requests.post(self.backend.url + "/admin/orders/%s/refunds" % no, json=body, headers=ADMIN, timeout=10)

    def admin(self, no, refresh=False):
        return requests.get(self.backend.url + "/admin/orders/%s%s" % (no, "?refresh=1" if refresh else ""),
                            headers=ADMIN, timeout=10).json()

    def wait_refund(self, no, out_refund_no, status, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            refunds = {r["out_refund_no"]: r["status"] for r in self.admin(no)["refunds"]}
            if refunds.get(out_refund_no) == status:
                return
            assert time.monotonic() < deadline, refunds
            time.sleep(0.05)


class TLSShop(Shop):
    """The simulator with --tls; the backend trusting its CA and holding the merchant certificate."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.tls = tmp_path / "tls"
        self.ca = str(self.tls / "ca.pem")

    def start(self):
        port = free_port()
        self.sim = Proc("run_simulator.py", ["--port", str(port), "--tls", "--tls-dir", str(self.tls),
                                             "--time-scale", "0.1"], port=port)
        self.sim.url = "https://127.0.0.1:%d" % port
        self.start_backend()
        return self

    def start_backend(self):
        self.backend = self.backend_process("sqlite:///" + self.db)

    def backend_process(self, database_url, *args, **env_extra):
        """A run_server.py on a free port, wired to this simulator with the merchant certificate."""
        port = free_port()
        env = backend_env(self.sim.url, port, self.sign_type)
        env.update(WECHAT_CA_FILE=self.ca, WECHAT_CERT_FILE=str(self.tls / "merchant.pem"),
                   WECHAT_KEY_FILE=str(self.tls / "merchant-key.pem"), ADMIN_TOKEN=ADMIN_TOKEN, **env_extra)
        return Proc("run_server.py", ["--port", str(port), "--database-url", database_url, *args], env=env, port=port)

    def simulator(self, method, path, **kw):
        return requests.request(method, self.sim.url + path, timeout=10, verify=self.ca, **kw)

    def wx_login(self, user="alice"):
        return self.simulator("POST", "/sim/login", json={"appid": DEMO["appid"], "user": user}).json()["code"]

    def pay(self, payment):
        return self.simulator("POST", "/sim/pay", json=dict(payment, appid=DEMO["appid"]))


class V3Shop(Shop):
    """run_simulator.py (its v3 keys in --v3-dir, --v3-key-mode) and run_server.py in WeChat Pay
    v3, configured from the simulator's manifest DIR/v3.json as the README says (plain HTTP:
    v3 needs no client certificate). notify_url: the backend's WECHAT_NOTIFY_URL if not its own
    (a URL WeChat cannot reach loses every notification)."""

    def __init__(self, tmp_path, key_mode="public-key", time_scale=0.01, name=None, notify_url=None):
        super().__init__(tmp_path)
        name = name or key_mode
        self.db = str(tmp_path / ("shop-v3-%s.db" % name))
        self.key_mode, self.time_scale, self.notify_url = key_mode, time_scale, notify_url
        self.v3_dir = str(tmp_path / ("sim-v3-%s" % name))
        self.cert_dir = str(tmp_path / ("backend-certs-%s" % name))
        self.manifest = None

    def start(self, sim=None):
        """Start a simulator, or share `sim` (another V3Shop's, already started)."""
        if sim is None:
            port = free_port()
            self.sim = Proc("run_simulator.py", ["--port", str(port), "--v3-dir", self.v3_dir,
                                                 "--v3-key-mode", self.key_mode,
                                                 "--time-scale", str(self.time_scale)], port=port)
        else:
            self.sim, self.v3_dir = sim.sim, sim.v3_dir
        with open(os.path.join(self.v3_dir, "v3.json"), encoding="utf-8") as f:
            self.manifest = json.load(f)
        self.start_backend()
        return self

    def backend_env(self, port):
        m = self.manifest
        env = {"WECHAT_PAY_VERSION": "v3", "WECHAT_APPID": m["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
               "WECHAT_MCH_ID": m["mchid"], "WECHAT_APIV3_KEY": m["apiv3_key"],
               "WECHAT_MCH_PRIVATE_KEY_FILE": m["merchant_private_key_file"],
               "WECHAT_MCH_SERIAL_NO": m["merchant_serial_no"],
               "WECHAT_NOTIFY_URL": self.notify_url or "http://127.0.0.1:%d/wechat/pay/v3/notify" % port,
               "WECHAT_LOGIN_BASE_URL": self.sim.url, "WECHAT_PAY_BASE_URL": self.sim.url,
               "WECHAT_TIMEOUT": "5", "ADMIN_TOKEN": ADMIN_TOKEN}
        if m["key_mode"] in ("public-key", "migration"):
            env.update(WECHAT_PAY_PUBLIC_KEY_FILE=m["wechatpay_public_key_file"],
                       WECHAT_PAY_PUBLIC_KEY_ID=m["wechatpay_public_key_id"])
        if m["key_mode"] in ("certificate", "migration"):
            env.update(WECHAT_PLATFORM_CERT_DIR=self.cert_dir)
        return env

    def start_backend(self):
        port = self.backend.port if self.backend else free_port()
        self.backend = Proc("run_server.py", ["--port", str(port), "--database-url", "sqlite:///" + self.db],
                            env=self.backend_env(port), port=port)

    def stop(self, own_sim=True):
        for proc in (self.backend, self.sim if own_sim else None):
            if proc:
                proc.stop()

    def simulator(self, method, path, **kw):
        r = requests.request(method, self.sim.url + path, timeout=10, **kw)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def resend(self, no, mode, count=None, kind="orders"):
        """POST /sim/{orders|refunds}/<no>/notify: the attempts the simulator made."""
        body = {"mode": mode} if count is None else {"mode": mode, "count": count}
        return self.simulator("POST", "/sim/%s/%s/notify" % (kind, no), json=body)["attempts"]

    def paid_order(self, user="alice", product="cake"):
        """A Mini Program purchase, paid and notified: (auth, out_trade_no, transaction_id)."""
        auth = self.login(user)
        order = self.create(auth, {"product_id": product})
        paid = self.pay(order["payment"])
        assert paid.status_code == 200, paid.text
        self.wait_status(auth, order["out_trade_no"], "SUCCESS")
        return auth, order["out_trade_no"], paid.json()["transaction_id"]


class Users:
    """Logged-in Mini Program users, each running self.run(auth) in a thread from `with` until
    its end (a subclass's run loops until self.stop is set)."""
    join_timeout = 10

    def __init__(self, shop, users, prefix):
        self.shop = shop
        self.auths = [shop.login("%s-%d" % (prefix, i)) for i in range(users)]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(a,)) for a in self.auths]

    def run(self, auth):
        raise NotImplementedError

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(self.join_timeout)


class Traffic(Users):
    """Mini Program users creating and paying orders in threads until told to stop."""

    def __init__(self, shop, users=4):
        self.created, self.paid, self.errors = [], [], 0
        super().__init__(shop, users, "crash")

    def run(self, auth):
        while not self.stop.is_set():
            try:
                r = requests.post(self.shop.backend.url + "/api/orders", json={"product_id": "tea"},
                                  headers=auth, timeout=5)
                if r.status_code != 201:
                    self.errors += 1
                    continue
                order = r.json()
                self.created.append(order["out_trade_no"])
                if self.shop.pay(order["payment"]).status_code == 200:
                    self.paid.append(order["out_trade_no"])
            except requests.RequestException:
                self.errors += 1
                time.sleep(0.02)
