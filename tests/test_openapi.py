"""server/http/openapi.json: every route and only those, and a running backend answering as it says."""
import json
import time

import functools

import pytest
import requests
import tornado.web
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import server
from server.app import DAY, NOTE_ID, ROUTES, TRADE_NO
from server.catalog import DEMO_PRODUCTS
from server.http.handlers import OPENAPI_FILE
from tests.support import ADMIN_TOKEN, DEMO
from tests.support.processes import Proc, free_port

PRODUCTS = [p["id"] for p in DEMO_PRODUCTS]
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
# bounded: a few seconds for the whole API
FUZZ = settings(max_examples=20, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


@functools.lru_cache(maxsize=None)
def schemathesis():
    """The schemathesis package, imported when a test uses it: every xdist worker collects every
    module, and importing it (rewritten for assertions as a pytest plugin's) costs seconds."""
    import schemathesis as package
    return package


def checks():
    """Every answer: no 5xx (the simulator and the database are up), and its status code,
    content type and body as the document lists them."""
    sc = schemathesis().checks
    return [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
            sc.response_schema_conformance]


def load_document():
    with open(OPENAPI_FILE, encoding="utf-8") as f:
        return json.load(f)


def documented_path(pattern):
    """A route's pattern as the document writes it: /api/orders/{out_trade_no}, /admin/reconciliations/{date}."""
    return (pattern.replace(TRADE_NO, "{out_trade_no}").replace(DAY, "{date}").replace(NOTE_ID, "{id}")
            .replace("\\.", "."))


def handled_methods(handler):
    """The HTTP methods a handler class answers itself (not Tornado's default 405)."""
    return {m for m in HTTP_METHODS if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}


def test_every_route_is_documented_and_every_documented_operation_is_a_route():
    routed = {(documented_path(p), m) for p, handler in ROUTES for m in handled_methods(handler)}
    documented = {(path, m) for path, item in load_document()["paths"].items() for m in item if m in HTTP_METHODS}
    assert routed - documented == set(), "routes missing from openapi.json"
    assert documented - routed == set(), "operations in openapi.json that no route serves"


def test_the_document_is_valid_openapi_3_1():
    """Checked against the OpenAPI 3.1 schema (the one schemathesis ships)."""
    document = load_document()
    assert document["openapi"] == "3.1.0"
    schemathesis().openapi.from_dict(document).validate()


def test_the_documents_version_is_the_backends():
    assert load_document()["info"]["version"] == server.__version__


def test_every_api_error_answer_is_the_error_object_with_its_codes():
    """Error answers of the API (not WeChat's notifications) are {"error": {...}}, their codes listed."""
    document = load_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "wechat" in operation["tags"]:
                continue
            for status, answer in operation["responses"].items():
                answer = resolve(document, answer)
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
                    assert schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"], (method, path)


def resolve(document, item):
    if "$ref" not in item:
        return item
    _, kind, name = item["$ref"].lstrip("#/").split("/")
    return document["components"][kind][name]


# -- against a running backend ------------------------------------------------------------------
class Backend:
    """run_server.py --simulator on free ports, with a user who has an unpaid and a paid order."""

    def __init__(self, tmp_path):
        self.port, self.sim_port = free_port(), free_port()
        self.proc = Proc("run_server.py", ["--simulator", "--port", str(self.port), "--simulator-port",
                                           str(self.sim_port), "--database-url", "sqlite:///%s" % (tmp_path / "api.db"),
                                           "--simulator-tls-dir", str(tmp_path / "tls"), "--log-level", "ERROR"],
                         env={"ADMIN_TOKEN": ADMIN_TOKEN}, port=self.port)
        self.url, self.sim = self.proc.url, "https://127.0.0.1:%d" % self.sim_port
        self.ca = str(tmp_path / "tls" / "ca.pem")   # per call: REQUESTS_CA_BUNDLE would beat Session.verify
        self.http = requests.Session()
        self.admin = {"Authorization": "Bearer " + ADMIN_TOKEN}
        try:
            self.session = {"Authorization": "Bearer " + self.login()}
            self.unpaid = self.order("tea")["out_trade_no"]
            self.paid = self.paid_order()
        except BaseException:
            self.proc.stop()
            raise

    def login(self):
        code = self.http.post(self.sim + "/sim/login", json={"appid": DEMO["appid"], "user": "openapi"},
                              timeout=5, verify=self.ca).json()["code"]
        return self.http.post(self.url + "/api/login", json={"code": code}, timeout=5).json()["token"]

    def order(self, product):
        r = self.http.post(self.url + "/api/orders", json={"product_id": product}, headers=self.session, timeout=5)
        assert r.status_code == 201, r.text
        return r.json()

    def paid_order(self):
        order = self.order("cake")
        r = self.http.post(self.sim + "/sim/pay", json=dict(order["payment"], appid=DEMO["appid"]), timeout=5,
                           verify=self.ca)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while self.http.get(self.url + "/api/orders/" + order["out_trade_no"], headers=self.session,
                            timeout=5).json()["status"] != "SUCCESS":
            assert time.monotonic() < deadline, "the payment notification did not arrive"
            time.sleep(0.05)
        return order["out_trade_no"]

    def auth_for(self, operation):
        """The token an operation takes: the admin token for /admin/, the session's for /api/."""
        if operation.path.startswith("/admin/"):
            return self.admin
        return self.session if operation.path.startswith("/api/") else {}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("openapi"))
    yield b
    b.proc.stop()


@pytest.fixture(scope="module")
def backend_v3(tmp_path_factory):
    """A backend speaking WeChat Pay v3, for the v3 notification endpoints (a v2 one answers 404)."""
    tmp = tmp_path_factory.mktemp("openapi-v3")
    port = free_port()
    proc = Proc("run_server.py", ["--simulator", "--pay-version", "v3", "--port", str(port), "--simulator-port",
                                  str(free_port()), "--simulator-v3-dir", str(tmp / "v3"), "--simulator-tls-dir",
                                  str(tmp / "tls"), "--database-url", "sqlite:///%s" % (tmp / "api.db"),
                                  "--log-level", "ERROR"], port=port)
    yield proc
    proc.stop()


@pytest.mark.e2e
def test_the_document_is_served_without_auth(backend):
    r = requests.get(backend.url + "/openapi.json", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.json() == load_document() and r.json()["openapi"].startswith("3.1.")


# The schemathesis Python API, one pytest test per operation (its lazy pytest integration sets
# Node._nodeid, which pytest 9.2 no longer has). The document loaded here is the file the
# backend serves (test_the_document_is_served_without_auth).
OPERATIONS = ["%s %s" % (method.upper(), path) for path, item in load_document()["paths"].items()
              for method in item if method in HTTP_METHODS]


@functools.lru_cache(maxsize=None)
def operation_named(label):
    schema = schemathesis().openapi.from_path(OPENAPI_FILE)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}[label]


def cases(operation, backend):
    """Valid and invalid requests; an order number in the path is now and then one of the
    user's real orders (unpaid or paid), so that answers beyond 404 are checked too."""
    mode = schemathesis().GenerationMode
    strategies = [operation.as_strategy(mode.POSITIVE), operation.as_strategy(mode.NEGATIVE)]
    if "{out_trade_no}" in operation.path:
        strategies += [operation.as_strategy(path_parameters={"out_trade_no": no}) for no in (backend.unpaid, backend.paid)]
    if operation.label == "POST /api/orders":  # a random product_id is hardly ever in the catalog
        orders = st.fixed_dictionaries({"product_id": st.sampled_from(PRODUCTS), "quantity": st.integers(1, 99)})
        strategies.append(orders.flatmap(lambda body: operation.as_strategy(body=body)))
    return st.one_of(strategies)


@pytest.mark.e2e
@pytest.mark.parametrize("label", OPERATIONS)
def test_the_backend_answers_as_documented(backend, label, request):
    operation = operation_named(label)
    base_url = request.getfixturevalue("backend_v3").url if operation.path.endswith("/v3/notify") else backend.url

    @FUZZ
    @given(case=cases(operation, backend))
    def answers_as_documented(case):
        case.call_and_validate(base_url=base_url, headers=backend.auth_for(operation), checks=checks())

    answers_as_documented()
