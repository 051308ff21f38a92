"""Shared fixtures: the spec's vectors and demo credentials."""
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# A copy of ../shared/spec/vectors.json, so a clone without shared/ still tests;
# tests/test_repo.py checks that the copy equals the spec when the spec is beside the repo.
VECTORS_FILE = os.path.join(HERE, "data", "vectors.json")
SPEC_VECTORS_FILE = os.path.join(HERE, "..", "..", "shared", "spec", "vectors.json")

DEMO = {
    "appid": "wxd930ea5d5a258f4f",
    "app_secret": "8a2f3c4d5e6f70819a0b1c2d3e4f5061",
    "mch_id": "10000100",
    "api_key": "192006250b4c09247ec02edce69f6a2d",
}


ADMIN_TOKEN = "test-admin-token-0123456789"


def load_vectors():
    with open(VECTORS_FILE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def vectors():
    return load_vectors()


class FakeClock:
    """The backend's clock in integration tests: real time plus an offset tests can move."""

    def __init__(self):
        import time
        self._time = time.time
        self.offset = 0.0

    def __call__(self):
        return self._time() + self.offset


@pytest.fixture
def sign_type():
    """Overridden by parametrising tests: the backend's WECHAT_SIGN_TYPE."""
    return "MD5"


@pytest.fixture
def sim(io_loop):
    """The simulator (demo credentials, time scale 0.01) on its own port in the test's IOLoop."""
    import tornado.testing
    from simulator.app import make_app as make_sim_app, make_server
    from simulator.config import SimConfig
    from simulator.state import State

    state = State(SimConfig.demo(), time_scale=0.01)
    sim_app = make_sim_app(state, notify_timeout=2.0)
    sock, port = tornado.testing.bind_unused_port()
    server = make_server(sim_app)
    server.add_sockets([sock])
    sim_app.url = "http://127.0.0.1:%d" % port
    sim_app.state = state
    yield sim_app
    sim_app.sim_notifier.shutdown()
    server.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backend_overrides():
    """Config fields a test module or test overrides (e.g. timeout, pay_base_url)."""
    return {}


@pytest.fixture
def app(sim, io_loop, tmp_path, http_port, sign_type, clock, backend_overrides):
    """The backend (pytest-tornado serves it on http_port) wired to the in-process simulator."""
    from server.app import make_app
    from server.config import Config

    values = dict(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                  api_key=DEMO["api_key"], sign_type=sign_type, timeout=3.0,
                  notify_url="http://127.0.0.1:%d/wechat/pay/notify" % http_port,
                  login_base_url=sim.url, pay_base_url=sim.url,
                  refund_notify_url="http://127.0.0.1:%d/wechat/refund/notify" % http_port,
                  admin_token=ADMIN_TOKEN, database_url="sqlite:///%s" % (tmp_path / "payments.db"))
    values.update(backend_overrides)
    config = Config(**values)
    backend = make_app(config, clock=clock)
    io_loop.run_sync(backend.service.store.open)
    yield backend
    backend.service.wechat.close()
    io_loop.run_sync(backend.service.store.close)
