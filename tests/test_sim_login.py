"""Login side of the simulator: /sim/login codes, jscode2session rules, /cgi-bin/token."""
import asyncio
import base64
import json
import urllib.parse

import pytest

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.models import openid_for
from simulator.state import State
from tests.support.sim import stop_simulator, DEMO_APPID, DEMO_SECRET, call, login

APP2, SECRET2 = "wx2222222222222222", "s" * 32


@pytest.fixture
def app(io_loop):
    config = SimConfig.from_dict({
        "apps": [{"appid": DEMO_APPID, "secret": DEMO_SECRET}, {"appid": APP2, "secret": SECRET2}],
        "merchants": [{"mch_id": "10000100", "api_key": "k" * 32, "appids": [DEMO_APPID, APP2]}]})
    application = make_app(State(config, time_scale=0.001))
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def code2session(http_client, base, **params):
    query = {"appid": DEMO_APPID, "secret": DEMO_SECRET, "grant_type": "authorization_code"}
    query.update(params)
    query = {k: v for k, v in query.items() if v is not None}
    resp = await http_client.fetch(base + "/sns/jscode2session?" + urllib.parse.urlencode(query),
                                   raise_error=False)
    assert resp.code == 200     # WeChat answers 200 even on failure
    return json.loads(resp.body)


@pytest.mark.gen_test
async def test_code_exchanges_once_for_stable_openid_and_session_key(http_client, base):
    code, openid = await login(http_client, base, "alice")
    data = await code2session(http_client, base, js_code=code)
    assert data["openid"] == openid == openid_for(DEMO_APPID, "alice")
    assert len(data["openid"]) == 28
    assert len(base64.b64decode(data["session_key"], validate=True)) == 16
    assert len(data["session_key"]) == 24
    assert "errcode" not in data
    again = await code2session(http_client, base, js_code=code)
    assert again["errcode"] == 40163 and again["errmsg"].startswith("code been used")
    code2, _ = await login(http_client, base, "alice")
    second = await code2session(http_client, base, js_code=code2)
    assert second["openid"] == openid and second["session_key"] != data["session_key"]


@pytest.mark.gen_test
async def test_openid_differs_per_user_and_per_app(http_client, base):
    _, alice = await login(http_client, base, "alice")
    _, bob = await login(http_client, base, "bob")
    _, alice2 = await login(http_client, base, "alice", APP2)
    assert len({alice, bob, alice2}) == 3
    assert alice[:6] == bob[:6]     # same app: a shared prefix, like real openids


@pytest.mark.gen_test
async def test_unknown_code_and_code_of_other_app(http_client, base):
    data = await code2session(http_client, base, js_code="nope")
    assert data["errcode"] == 40029 and "rid:" in data["errmsg"]
    code, _ = await login(http_client, base, "alice", APP2)
    data = await code2session(http_client, base, js_code=code)
    assert data["errcode"] == 40029


@pytest.mark.gen_test
async def test_code_expires_after_five_minutes_of_simulator_clock(http_client, base):
    code, _ = await login(http_client, base)
    status, clock = await call(http_client, base + "/sim/clock", "POST", {"advance": 0.31})
    assert status == 200 and clock["offset"] == pytest.approx(0.31)
    assert (await code2session(http_client, base, js_code=code))["errcode"] == 40029
    code, _ = await login(http_client, base)
    await call(http_client, base + "/sim/clock", "POST", {"advance": 0.2})
    assert "openid" in await code2session(http_client, base, js_code=code)


@pytest.mark.gen_test
async def test_code_expiry_is_scaled_in_real_time(http_client, base):
    code, _ = await login(http_client, base)       # 300 s * 0.001 = 0.3 s
    await asyncio.sleep(0.35)
    assert (await code2session(http_client, base, js_code=code))["errcode"] == 40029


@pytest.mark.gen_test
@pytest.mark.parametrize("params, errcode", [
    ({"appid": "wxunknown"}, 40013),
    ({"secret": "wrong"}, 40125),
    ({"appid": APP2}, 40125),           # app2 with app1's secret
    ({"appid": None}, 41002),
    ({"secret": None}, 41004),
    ({"js_code": None}, 41008),
])
async def test_credential_and_parameter_errors(http_client, base, params, errcode):
    code, _ = await login(http_client, base)
    data = await code2session(http_client, base, **dict({"js_code": code}, **params))
    assert data["errcode"] == errcode and "openid" not in data
    if errcode != 41008:    # the code was not consumed by a refused call
        assert "openid" in await code2session(http_client, base, js_code=code)


@pytest.mark.gen_test
@pytest.mark.parametrize("errcode", [40226, 45011, -1, 40029])
async def test_forced_errcode(http_client, base, errcode):
    data = await code2session(http_client, base, js_code="errcode-%d" % errcode)
    assert data["errcode"] == errcode


@pytest.mark.gen_test
async def test_access_token_parameter_ignored_and_text_plain(http_client, base):
    code, openid = await login(http_client, base)
    query = urllib.parse.urlencode({"appid": DEMO_APPID, "secret": DEMO_SECRET, "js_code": code,
                                    "grant_type": "authorization_code",
                                    "access_token": "whatever"})
    resp = await http_client.fetch(base + "/sns/jscode2session?" + query)
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert json.loads(resp.body)["openid"] == openid


@pytest.mark.gen_test
async def test_token_endpoint(http_client, base):
    query = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET}
    resp = await http_client.fetch(base + "/cgi-bin/token?" + urllib.parse.urlencode(query))
    data = json.loads(resp.body)
    assert data["expires_in"] == 7200 and len(data["access_token"]) > 32
    for change, errcode in (({"secret": "x"}, 40125), ({"appid": "wx0"}, 40013),
                            ({"grant_type": "authorization_code"}, 40002)):
        url = base + "/cgi-bin/token?" + urllib.parse.urlencode(dict(query, **change))
        assert json.loads((await http_client.fetch(url)).body)["errcode"] == errcode


@pytest.mark.gen_test
async def test_sim_login_input_errors(http_client, base):
    status, data = await call(http_client, base + "/sim/login", "POST", {"appid": "wxnope"})
    assert status == 400 and data["error"]["code"] == "UNKNOWN_APPID"
    status, data = await call(http_client, base + "/sim/login", "POST", {"user": "x"})
    assert status == 400        # two apps configured: appid is required
    status, data = await call(http_client, base + "/sim/login", "POST",
                              {"appid": DEMO_APPID, "user": ["x"]})
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"


@pytest.mark.gen_test
async def test_login_requests_are_logged(http_client, base, app):
    await code2session(http_client, base, js_code="nope")
    entry = app.sim_state.requests[-1]
    assert entry["api"] == "/sns/jscode2session" and entry["error"] == 40029


@pytest.mark.gen_test
async def test_developer_mode_takes_unknown_codes_once_as_the_developer(http_client, base, app):
    """--accept-unknown-codes: a code from WeChat DevTools' own wx.login works once, for one
    stable developer openid per appid; strict mode (the default) refuses it."""
    answer = await code2session(http_client, base, js_code="0a3Xk1Ga1devtools0code0000000000")
    assert answer["errcode"] == 40029                       # strict by default
    app.sim_state.accept_unknown_codes = True
    first = await code2session(http_client, base, js_code="0a3Xk1Ga1devtools0code0000000001")
    second = await code2session(http_client, base, js_code="0a3Xk1Ga1devtools0code0000000002")
    assert first["openid"] == second["openid"] == openid_for(DEMO_APPID, "developer")
    again = await code2session(http_client, base, js_code="0a3Xk1Ga1devtools0code0000000001")
    assert again["errcode"] == 40163                        # once each, as WeChat
    other = await code2session(http_client, base, appid=APP2, secret=SECRET2, js_code="another-devtools-code")
    assert other["openid"] == openid_for(APP2, "developer") != first["openid"]
    code, _ = await login(http_client, base, "alice")          # issued codes keep their user
    assert (await code2session(http_client, base, js_code=code))["openid"] == openid_for(DEMO_APPID, "alice")
    bad = await code2session(http_client, base, js_code="x", secret="wrong" * 6 + "xx")
    assert bad["errcode"] == 40125                          # the AppSecret is still checked
