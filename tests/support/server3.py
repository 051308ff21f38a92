"""The backend in API v3 mode against the real simulator in process (as the v2 tests run it):
the simulator's v3 keys made from vectors_v3.json's, so the backend's configuration and the
tests know them, its fixtures, and notifications built with the simulator's own code
(simulator/notifications3.py, never server/) for the tests that deliver one by hand."""
import json
import os
import time

import pytest
from wechatpayv3.utils import load_private_key, load_public_key

from simulator.v3 import notifications as notifications3, wire as protocol3
from tests.support import DEMO, HERE

VECTORS_V3_FILE = os.path.join(HERE, "data", "vectors_v3.json")
with open(VECTORS_V3_FILE, encoding="utf-8") as _f:
    VECTORS_V3 = json.load(_f)
KEYS = VECTORS_V3["keys"]
APIV3_KEY = VECTORS_V3["notify"][0]["apiv3_key"]
MERCHANT_SERIAL = KEYS["merchant_serial_no"]
PUB_KEY_ID = KEYS["wechatpay_public_key_id"]
MCHID, APPID = DEMO["mch_id"], DEMO["appid"]
WECHATPAY_KEY = load_private_key(KEYS["wechatpay_private_key"])
MERCHANT_PUBLIC_KEY = load_public_key(KEYS["merchant_public_key"])
REFUND_DELAY = 3600         # WeChat seconds (36 s scaled): refunds stay PROCESSING until settled
TIME_SCALE = 0.01


def other_key():
    """A key WeChat never had (the simulator's forger, made once)."""
    return notifications3.forger_key()


def write_keys(directory):
    """The merchant's private key and the WeChat Pay public key as PEM files in directory."""
    paths = {}
    for name, pem in (("apiclient_key.pem", KEYS["merchant_private_key"]),
                      ("pub_key.pem", KEYS["wechatpay_public_key"]),
                      ("merchant_public_key.pem", KEYS["merchant_public_key"])):
        paths[name] = str(directory / name)
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(pem)
    return paths


def prepare_keys(directory, key_mode):
    """simulator.v3.keys.prepare() with the vectors' WeChat Pay key (prepare() reuses the key it
    finds) and merchant; the platform certificate is the simulator's own."""
    import pathlib
    from simulator.v3 import keys as v3keys
    directory = pathlib.Path(directory)
    directory.mkdir(exist_ok=True)
    paths = write_keys(directory)
    with open(directory / "wechatpay_private_key.pem", "w", encoding="utf-8") as f:
        f.write(KEYS["wechatpay_private_key"])
    return v3keys.prepare(str(directory), MCHID, APPID, APIV3_KEY, key_mode, public_key_id=PUB_KEY_ID,
                          merchant_public_key=paths["merchant_public_key.pem"], merchant_serial=MERCHANT_SERIAL)


def v3_values(tmp_path, base_url, key_mode="public-key", backend_port=8000, **overrides):
    """Config.from_values() input for a v3 backend talking to base_url."""
    keys = write_keys(tmp_path)
    values = dict(
        appid=APPID, app_secret=DEMO["app_secret"], mch_id=MCHID, api_key="", timeout="3", session_ttl="7200",
        notify_url="http://127.0.0.1:%d/wechat/pay/v3/notify" % backend_port, login_base_url=base_url,
        pay_base_url=base_url, database_url="sqlite:///%s" % (tmp_path / "payments.db"), pay_version="v3",
        apiv3_key=APIV3_KEY, mch_private_key_file=keys["apiclient_key.pem"], mch_serial_no=MERCHANT_SERIAL,
        admin_token="test-admin-token-0123456789")
    if key_mode in ("public-key", "migration"):
        values.update(pay_public_key_file=keys["pub_key.pem"], pay_public_key_id=PUB_KEY_ID)
    if key_mode in ("certificate", "migration"):
        values.update(platform_cert_dir=str(tmp_path / "platform-certs"))
    values.update(overrides)
    return values


def sign_again(headers, body, key, timestamp):
    """headers with Wechatpay-Timestamp moved to timestamp and the signature made again by key."""
    message = protocol3.answer_message(str(timestamp), headers["Wechatpay-Nonce"], body)
    return dict(headers, **{"Wechatpay-Timestamp": str(timestamp),
                            "Wechatpay-Signature": protocol3.sign(key, message)})


def notification(resource, event_type="TRANSACTION.SUCCESS", apiv3_key=APIV3_KEY, event_id=None, key=None,
                 serial=PUB_KEY_ID, timestamp=None, signature_type=protocol3.SIGNATURE_TYPE):
    """(headers, body) of a notification carrying resource (a dict), built by the simulator's
    notifications3.build: signed by key (WeChat Pay's by default) with serial at timestamp
    (now), Wechatpay-Signature-Type as given (None: left out)."""
    original = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    summary = "支付成功" if original == "transaction" else "退款状态变更"
    event = (event_id or "EV-%d" % time.time_ns(), time.time(), event_type, summary, original, resource)
    body, headers, _ = notifications3.build(event, apiv3_key, (serial, key or WECHATPAY_KEY))
    del headers["Content-Type"]
    if timestamp is not None:
        headers = sign_again(headers, body, key or WECHATPAY_KEY, timestamp)
    if signature_type is None:
        del headers["Wechatpay-Signature-Type"]
    else:
        headers["Wechatpay-Signature-Type"] = signature_type
    return headers, body


def transaction(state, out_trade_no, /, paid=True, **overrides):
    """The transaction of the simulator's order out_trade_no as its notification carries it,
    with overrides. paid: an unpaid order's payment made up as the simulator's forgeries make
    it up (a notification claiming a payment WeChat never saw); False: the order as it is."""
    order = state.orders[(MCHID, out_trade_no)]
    resource = notifications3.transaction(order, "bad_sign" if paid and not order.paid else "normal")
    resource.update(overrides)
    return resource


def refund_notice(state, out_refund_no, /, status="SUCCESS", **overrides):
    """The notification resource of the simulator's refund out_refund_no, claiming status
    (SUCCESS with a success_time), with overrides."""
    refund = state.refunds[(MCHID, out_refund_no)]
    resource = notifications3.refund_notice(refund, state.orders.get((MCHID, refund.out_trade_no)))
    resource["refund_status"] = status
    if status == "SUCCESS":
        resource.setdefault("success_time", protocol3.rfc3339(time.time()))
    resource.update(overrides)
    return resource


def pay_lost(state, out_trade_no):
    """The payer pays at WeChat and its notification is lost: the simulator's order paid,
    nothing sent."""
    state.mark_paid(state.orders[(MCHID, out_trade_no)])


async def delivered(state, **match):
    """The simulator's last notification record matching match, once it has an outcome."""
    import asyncio
    for _ in range(500):
        records = [r for r in state.notifications if all(r.get(k) == v for k, v in match.items())]
        if records and records[-1]["outcome"] != "pending":
            return records[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no notification delivered for %s: %s" % (match, state.notifications))


def v3_requests(state, fragment=""):
    """The simulator's request log entries of v3 calls whose path contains fragment."""
    return [e for e in state.requests if e["path"].startswith("/v3/") and fragment in e["path"]]


# -- fixtures (import them into a test module: `from tests.support.server3 import ...`) ----------
@pytest.fixture
def key_mode():
    """Overridden by parametrising: the simulator's (and the backend's) key mode."""
    return "public-key"


@pytest.fixture(scope="session")
def sim3_dir(tmp_path_factory):
    """The simulator's --v3-dir, its platform key made once per session."""
    return tmp_path_factory.mktemp("sim3-vectors")


_SETUPS = {}


def setup_for(directory, key_mode):
    """prepare_keys(directory, key_mode), once per session (a V3Setup is immutable)."""
    if (directory, key_mode) not in _SETUPS:
        _SETUPS[directory, key_mode] = prepare_keys(directory, key_mode)
    return _SETUPS[directory, key_mode]


@pytest.fixture
def sim3(io_loop, key_mode, sim3_dir):
    """The simulator with API v3 (the vectors' keys, key_mode) on its own port in the test's
    IOLoop; .url, .state."""
    import tornado.testing
    from simulator.app import make_app, make_server
    from simulator.config import SimConfig
    from simulator.state import State
    from tests.support.sim import stop_simulator
    setup = setup_for(sim3_dir, key_mode)
    state = State(SimConfig.demo(), time_scale=TIME_SCALE, refund_delay=REFUND_DELAY, v3=setup)
    application = make_app(state, notify_timeout=2.0)
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(application)
    server.add_sockets([sock])
    application.url = "http://127.0.0.1:%d" % port
    application.state = state
    yield application
    stop_simulator(application, io_loop)
    server.stop()


@pytest.fixture
def app3(sim3, io_loop, tmp_path, http_port, clock, key_mode, backend_store):
    """The backend in v3 mode (pytest-tornado serves it: alias it as `app` in the module)."""
    from server.app import make_app
    from server.config import Config
    config = Config.from_values(v3_values(tmp_path, sim3.url, key_mode, http_port))
    store = backend_store(str(tmp_path / "payments.db"), clock) if backend_store else None
    backend = make_app(config, store=store, clock=clock)
    io_loop.run_sync(backend.backend.start)
    yield backend
    io_loop.run_sync(lambda: backend.backend.stop(drain=0))
