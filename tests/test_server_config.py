"""Configuration: every problem named in one message; secrets never shown."""
import subprocess
import sys

import pytest

from server.config import Config, ConfigError
from tests.conftest import DEMO
from tests.processes import ROOT

GOOD = {
    "WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
    "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
    "WECHAT_NOTIFY_URL": "https://shop.example.com/wechat/pay/notify",
}


def test_defaults_from_contract():
    c = Config.from_env(GOOD)
    assert (c.sign_type, c.timeout, c.database_url) == ("MD5", 10.0, "sqlite:///payments.db")
    assert c.login_base_url == "https://api.weixin.qq.com"
    assert c.pay_base_url == "https://api.mch.weixin.qq.com"


def test_overrides_win():
    c = Config.from_env(GOOD, {"sign_type": "HMAC-SHA256", "database_url": None})
    assert c.sign_type == "HMAC-SHA256" and c.database_url == "sqlite:///payments.db"


def test_every_problem_named_at_once():
    env = dict(GOOD, WECHAT_API_KEY="short", WECHAT_PAY_BASE_URL="not a url", WECHAT_TIMEOUT="-1",
               WECHAT_SIGN_TYPE="SHA1")
    del env["WECHAT_NOTIFY_URL"]
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    for name in ("WECHAT_NOTIFY_URL", "WECHAT_API_KEY", "WECHAT_PAY_BASE_URL", "WECHAT_TIMEOUT", "WECHAT_SIGN_TYPE"):
        assert name in message
    assert "short" not in message


@pytest.mark.parametrize("url", ["https://x.example/notify?a=1", "ftp://x/notify", "/relative"])
def test_notify_url_without_query(url):
    with pytest.raises(ConfigError):
        Config.from_env(dict(GOOD, WECHAT_NOTIFY_URL=url))


def test_secrets_not_in_repr_or_describe():
    c = Config.from_env(GOOD)
    assert DEMO["api_key"] not in repr(c) and DEMO["app_secret"] not in repr(c)
    assert DEMO["api_key"] not in str(c.describe())


def test_run_server_exits_with_one_clear_line():
    env = {"PATH": "/usr/bin:/bin", "WECHAT_API_KEY": "not-32-chars"}
    r = subprocess.run([sys.executable, "run_server.py"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "WECHAT_APPID is required" in lines[0] and "WECHAT_API_KEY must be 32" in lines[0]
