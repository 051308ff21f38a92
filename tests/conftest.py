"""Shared fixtures; the helpers they use are in tests/support/."""
import os
import sys

import pytest

# Compiled modules are cached (__pycache__, git-ignored) even where the environment asks not
# to (PYTHONDONTWRITEBYTECODE): the suite starts a few hundred Python processes (xdist workers,
# backends, simulators), and each would otherwise compile every module it imports again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

from tests.support import ADMIN_TOKEN, DEMO, FakeClock, load_vectors
from tests.support.sim import stop_simulator


@pytest.fixture(scope="session")
def vectors():
    return load_vectors()


@pytest.fixture(scope="session")
def v3_merchant(tmp_path_factory):
    """A throwaway merchant API certificate and key (2048 bits), made once per session."""
    from tests.support.sim3 import MerchantKeys
    return MerchantKeys(tmp_path_factory.mktemp("v3-merchant"))


@pytest.fixture(scope="session")
def v3_dir(tmp_path_factory):
    """A --v3-dir whose WeChat-side keys are made once per session (prepare() reuses them)."""
    return str(tmp_path_factory.mktemp("sim-v3"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    """Store tests run on both engines (a test asks for `engine` or `where`)."""
    return request.param


@pytest.fixture
def where(engine, request, tmp_path):
    """The database of this test: a SQLite file, or a new schema of the session's PostgreSQL."""
    return request.getfixturevalue("postgres_url") if engine == "postgres" else str(tmp_path / "p.db")


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
    stop_simulator(sim_app, io_loop)
    server.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backend_overrides():
    """Config fields a test module or test overrides (e.g. timeout, pay_base_url)."""
    return {}


@pytest.fixture
def backend_store():
    """A test module may give the backend its own store: a function (path, clock) -> Store."""
    return None


@pytest.fixture
def app(sim, io_loop, tmp_path, http_port, sign_type, clock, backend_overrides, backend_store):
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
    store = backend_store(str(tmp_path / "payments.db"), clock) if backend_store else None
    backend = make_app(config, store=store, clock=clock)
    io_loop.run_sync(backend.service.store.open)
    yield backend
    backend.service.wechat.close()
    io_loop.run_sync(backend.service.store.close)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (tests/support/postgres.py). Without one:
    skipped with the reason on a developer's machine, failed in CI (CI set)."""
    import os
    from tests.support.postgres import PostgresServer, Unavailable
    server = PostgresServer()
    try:
        server.start()
    except Unavailable as exc:
        server.stop()
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL tests cannot run in CI: %s" % exc)
        pytest.skip("PostgreSQL: %s" % exc)
    yield server
    server.stop()


_databases = iter(range(1, 1 << 30))


@pytest.fixture
def postgres_url(postgres_server):
    """DATABASE_URL of a new, empty database (a schema of its own) on the session's server."""
    return postgres_server.create_schema("test_%d" % next(_databases))


def pytest_collection_modifyitems(items):
    """Process-level modules (marked e2e) first: xdist hands whole modules to its workers in
    this order, and the long ones started last would leave one worker finishing alone."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


def pytest_configure(config):
    """The controller compiles the project's modules once, before xdist starts its workers: on
    a fresh checkout the workers and the first processes they start would otherwise all
    compile the same modules at the same moment."""
    if hasattr(config, "workerinput"):
        return
    import compileall
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("server", "simulator", "bench", os.path.join("tests", "support")):
        compileall.compile_dir(os.path.join(root, name), quiet=2)
