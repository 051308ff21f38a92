"""Property-based fuzzing (hypothesis) of the JSON API and the notify URL of a real backend process.

Bounded: a fixed number of examples per endpoint, so CI time stays small. Properties: never a
5xx, never a traceback, always the contract's error shape, and the store unchanged whenever
the request was refused.
"""
import json
import sqlite3

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import DEMO
from tests.support.processes import Proc, free_port

pytestmark = pytest.mark.e2e
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Backend:
    def __init__(self, tmp_path):
        self.port, self.sim_port = free_port(), free_port()
        self.db = str(tmp_path / "fuzz.db")
        self.proc = Proc("run_server.py", ["--simulator", "--port", str(self.port), "--simulator-port",
                                           str(self.sim_port), "--database-url", "sqlite:///" + self.db,
                                           "--simulator-tls-dir", str(tmp_path / "tls"),
                                           "--log-level", "WARNING"], port=self.port)
        self.url, self.sim = self.proc.url, "https://127.0.0.1:%d" % self.sim_port
        self.http = requests.Session()
        ca = str(tmp_path / "tls" / "ca.pem")
        code = self.http.post(self.sim + "/sim/login", json={"user": "fuzzer"}, timeout=5, verify=ca).json()["code"]
        token = self.http.post(self.url + "/api/login", json={"code": code}, timeout=5).json()["token"]
        self.auth = {"Authorization": "Bearer " + token}

    def snapshot(self):
        conn = sqlite3.connect(self.db)
        try:
            return [conn.execute("SELECT * FROM %s ORDER BY 1" % t).fetchall()
                    for t in ("orders", "sessions", "order_events")]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("fuzz"))
    yield b
    b.proc.stop()


def assert_json_error(r):
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text and "<html" not in r.text.lower()
    data = r.json()
    if r.status_code >= 400:
        assert set(data) == {"error"} and isinstance(data["error"]["code"], str) and data["error"]["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
order_bodies = st.fixed_dictionaries({}, optional={
    "product_id": json_values | st.sampled_from(["coffee", "tea", "cake"]),
    "quantity": json_values | st.integers(-5, 120),
    "code": json_values, "total_fee": json_values,
}) | json_values
# what HTTP allows in a header value (others never reach the application: Tornado answers 400)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                        max_size=70).map(str.strip)
raw_bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())


@FUZZ
@given(body=order_bodies, with_token=st.booleans(), key=st.none() | header_values)
def test_fuzz_orders(backend, body, with_token, key):
    headers = dict(backend.auth) if with_token else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    before = backend.snapshot()
    r = backend.http.post(backend.url + "/api/orders", data=json.dumps(body).encode(),
                          headers={k: v.encode("latin-1") for k, v in headers.items()}, timeout=10)
    assert_json_error(r)
    if r.status_code != 201:
        assert backend.snapshot() == before


@FUZZ
@given(body=raw_bodies, path=st.sampled_from(["/api/login", "/api/orders"]))
def test_fuzz_raw_json_endpoints(backend, body, path):
    before = backend.snapshot()
    r = backend.http.post(backend.url + path, data=body, headers=backend.auth, timeout=10)
    assert_json_error(r)
    if r.status_code not in (200, 201):
        assert backend.snapshot() == before


xml_names = st.sampled_from(["return_code", "result_code", "appid", "mch_id", "out_trade_no", "total_fee",
                             "transaction_id", "sign", "sign_type", "time_end"]) | st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
xml_values = st.text(max_size=40).map(lambda s: s.replace("]]>", "")) | st.sampled_from(
    ["SUCCESS", "FAIL", DEMO["appid"], DEMO["mch_id"], "1200", "HMAC-SHA256", "MD5", "&x;", "<![CDATA["])


def xml_doc(fields, cdata):
    parts = []
    for k, v in fields.items():
        v = "<![CDATA[%s]]>" % v if cdata else v.replace("&", "&amp;").replace("<", "&lt;")
        parts.append("<%s>%s</%s>" % (k, v, k))
    return ("<xml>%s</xml>" % "".join(parts)).encode("utf-8", "surrogatepass")


notify_bodies = st.builds(xml_doc, st.dictionaries(xml_names, xml_values, max_size=12), st.booleans()) | st.binary(max_size=300)


@FUZZ
@given(body=notify_bodies)
def test_fuzz_notify(backend, body):
    before = backend.snapshot()
    r = backend.http.post(backend.url + "/wechat/pay/notify", data=body, timeout=10)
    assert r.status_code < 500 and b"Traceback" not in r.content
    from server.wechat.v2 import wire as wxpay
    assert wxpay.from_xml(r.content)["return_code"] == "FAIL"  # nothing here is signed with the key
    assert backend.snapshot() == before
