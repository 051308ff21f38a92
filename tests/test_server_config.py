"""Configuration: every problem named in one message; secrets never shown."""
import socket
import subprocess
import sys

import pytest

from server.config import Config, ConfigError, ServerOptions
from server.descriptors import default_max_connections
from tests.support import DEMO
from tests.support.processes import ROOT

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


@pytest.mark.parametrize("var, value, named", [
    ("WECHAT_PAY_BASE_URL", "http://[::1", "WECHAT_PAY_BASE_URL must be an http(s) URL"),
    ("WECHAT_PAY_BASE_URL", "http://127.0.0.1:abc", "WECHAT_PAY_BASE_URL must be an http(s) URL"),
    ("WECHAT_LOGIN_BASE_URL", "https://127.0.0.1:99999", "WECHAT_LOGIN_BASE_URL must be an http(s) URL"),
    ("WECHAT_NOTIFY_URL", "http://shop:0/wechat/pay/notify", "WECHAT_NOTIFY_URL must be an http(s) URL"),
    ("WECHAT_API_KEY", DEMO["api_key"][:31] + " ", "WECHAT_API_KEY has leading or trailing whitespace"),
    ("WECHAT_API_KEY", DEMO["api_key"][:31] + "!", "WECHAT_API_KEY must be 32 letters and digits"),
    ("WECHAT_APPID", " " + DEMO["appid"], "WECHAT_APPID has leading or trailing whitespace"),
    ("ADMIN_TOKEN", "0123456789abcdefghij ", "ADMIN_TOKEN has leading or trailing whitespace"),
    ("WECHAT_PAY_BASE_URL", "https://exa mple.com", "WECHAT_PAY_BASE_URL must be an http(s) URL"),
    ("WECHAT_TIMEOUT", "1e-300", "WECHAT_TIMEOUT must be a number of seconds"),
    ("SESSION_TTL", "²", "SESSION_TTL must be a positive integer"),
    ("SESSION_TTL", "9" * 5001, "SESSION_TTL must be a positive integer"),
    ("DATABASE_POOL_SIZE", "9" * 5001, "DATABASE_POOL_SIZE must be a whole number"),
    ("WECHAT_CONNECTIONS_PER_HOST", "9" * 5001, "WECHAT_CONNECTIONS_PER_HOST must be 0"),
])
def test_malformed_values_named(var, value, named):
    with pytest.raises(ConfigError) as info:
        Config.from_env(dict(GOOD, **{var: value}))
    assert named in str(info.value)
    assert (value.strip() not in str(info.value)) or var not in ("WECHAT_API_KEY", "ADMIN_TOKEN")


def test_unreadable_pem_files_named(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for env, named in ((dict(GOOD, WECHAT_CA_FILE=str(junk)), "WECHAT_CA_FILE %s is not a PEM CA certificate" % junk),
                       (dict(GOOD, WECHAT_CERT_FILE=str(junk), WECHAT_KEY_FILE=str(junk)),
                        "WECHAT_CERT_FILE %s and WECHAT_KEY_FILE %s are not a PEM certificate" % (junk, junk))):
        with pytest.raises(ConfigError) as info:
            Config.from_env(env)
        assert named in str(info.value)


def test_server_options_defaults_and_problems():
    options = ServerOptions.from_env({})
    assert (options.sweep_interval, options.log_level) == (60.0, "INFO")
    assert (options.limits.header_timeout, options.limits.body_timeout, options.limits.idle_timeout) == (10, 30, 75)
    assert ServerOptions.from_env({"LOG_LEVEL": "debug", "MAX_CONNECTIONS": "100"}).limits.max_connections == 100
    bad = {"SWEEP_INTERVAL": "abc", "LOG_LEVEL": "LOUD", "HEADER_TIMEOUT": "0", "BODY_TIMEOUT": "-1",
           "IDLE_TIMEOUT": "x", "MAX_CONNECTIONS": str(10 ** 9), "SEND_TIMEOUT": "1e-300"}
    with pytest.raises(ConfigError) as info:
        ServerOptions.from_env(bad)
    for var in bad:
        assert var in str(info.value)
    with pytest.raises(ConfigError) as info:
        ServerOptions.from_env({"HEADER_TIMEOUT": "90", "IDLE_TIMEOUT": "60"})
    assert "HEADER_TIMEOUT (90) must not be above IDLE_TIMEOUT (60)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        ServerOptions.from_env({"MAX_CONNECTIONS": "²"})
    assert "MAX_CONNECTIONS" in str(info.value)


@pytest.mark.parametrize("var", ["SWEEP_INTERVAL", "LOG_LEVEL", "EVENT_LOOP", "HEADER_TIMEOUT", "BODY_TIMEOUT",
                                 "IDLE_TIMEOUT", "SEND_TIMEOUT", "MAX_CONNECTIONS"])
def test_empty_process_setting_is_named_not_a_traceback(var):
    # set but empty (VAR= in a unit file) is a value, refused by name as any other bad one
    with pytest.raises(ConfigError) as info:
        ServerOptions.from_env({var: ""})
    assert "%s must be" % var in str(info.value) and "(got '')" in str(info.value)


def test_default_connection_cap_leaves_room_for_the_wechat_connections():
    assert default_max_connections(256) == 96     # (256 - 64) / 2: each may hold one to WeChat
    assert default_max_connections(1024) == 480
    assert default_max_connections(100000) == 10000
    assert default_max_connections(64) == 16


def run_server(args, env):
    full = dict(GOOD, PATH="/usr/bin:/bin", DATABASE_URL="sqlite:///:memory:", SWEEP_INTERVAL="0")
    full.update(env)
    r = subprocess.run([sys.executable, "run_server.py", *args], cwd=ROOT, env=full,
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def test_start_up_problems_are_one_line_naming_the_setting(tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"products": [{"id": "gold", "name": "Gold", "price": 100000000000000000000}]}')
    cases = [
        (["--port", "99999"], {}, "argument --port: must be a port number from 1 to 65535"),
        (["--port", "0"], {}, "argument --port: must be a port number"),
        (["--sweep-interval", "abc"], {}, "argument --sweep-interval"),
        ([], {"SWEEP_INTERVAL": "abc"}, "SWEEP_INTERVAL must be a number of seconds"),
        ([], {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ([], {"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of text, json"),
        ([], {"WECHAT_PAY_BASE_URL": "http://[::1"}, "WECHAT_PAY_BASE_URL must be an http(s) URL"),
        ([], {"WECHAT_PAY_BASE_URL": "http://127.0.0.1:99999"}, "WECHAT_PAY_BASE_URL must be an http(s) URL"),
        ([], {"CATALOG_FILE": str(catalog)}, "CATALOG_FILE: catalog %s: product gold: price must be" % catalog),
        ([], {"DATABASE_URL": "sqlite:///%s/x.db" % catalog}, "cannot open the database %s/x.db" % catalog),
        ([], {"WECHAT_CERT_FILE": str(catalog), "WECHAT_KEY_FILE": str(catalog)}, "WECHAT_CERT_FILE %s and" % catalog),
    ]
    for args, env, named in cases:
        code, out, err = run_server(args, env)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (args, env, err)
        assert lines[0].startswith("run_server.py: ") and named in lines[0], (args, env, lines)
        assert "Backend on" not in out


def test_busy_port_named_by_its_flag():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_server(["--port", str(port)], {})
        assert code == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (
            "run_server.py: --port %d: cannot listen on 127.0.0.1: address already in use" % port)


def test_default_connections_per_wechat_host_share_the_upstream_half():
    from server.descriptors import default_connections_per_host
    assert default_connections_per_host(256) == 48       # (256 - 64) / 4: two hosts, half of the rest
    assert default_connections_per_host(1024) == 240
    assert default_connections_per_host(20000) == 4984
    assert default_connections_per_host(64) == 8
    assert Config.from_env(GOOD).connections_per_host == 0
    with pytest.raises(ConfigError) as info:
        Config.from_env(dict(GOOD, WECHAT_CONNECTIONS_PER_HOST="lots"))
    assert "WECHAT_CONNECTIONS_PER_HOST" in str(info.value)


def test_database_password_not_in_repr():
    """Config keeps every other secret out of repr() (repr=False: app_secret, api_key,
    admin_token, and proxy_url because "a proxy URL may hold a password"); a PostgreSQL
    DATABASE_URL holds one too."""
    c = Config.from_env(dict(GOOD, DATABASE_URL="postgresql://shop:pg-s3cret@db.internal:5432/payments"))
    assert "pg-s3cret" not in repr(c)
    assert "pg-s3cret" not in str(c.describe())


@pytest.mark.parametrize("password", ["2024/Summer!", "/Summer!"])
def test_database_password_with_a_slash_never_shown(password):
    """A password with an unescaped '/' whose part before it is digits (or empty) splits the URL
    elsewhere: 'shop:2024' reads as host 'shop', port 2024, the rest as the path. The URL passes
    the check, and describe_url() (the banner, every start-up error) prints the password."""
    url = "postgresql://shop:%s@db.internal/payments" % password
    try:
        c = Config.from_env(dict(GOOD, DATABASE_URL=url))
    except ConfigError as exc:
        assert "Summer" not in str(exc)
        return
    assert "Summer" not in c.describe()["database_url"]


def test_database_wait_default_and_bounds():
    assert Config.from_env(GOOD).database_wait == 30.0
    assert Config.from_env(dict(GOOD, DATABASE_WAIT="0")).database_wait == 0.0
    for value in ("-1", "abc", "3601", "nan"):
        with pytest.raises(ConfigError) as info:
            Config.from_env(dict(GOOD, DATABASE_WAIT=value))
        assert "DATABASE_WAIT must be a number of seconds from 0 (no waiting) to 3600" in str(info.value), value
