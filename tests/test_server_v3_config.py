"""WeChat Pay v3 configuration: each problem named in one line, at start-up, without secrets;
and run_server.py's v3 configuration from the simulator's manifest."""
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.config import Config, ConfigError
from tests.support import DEMO
from tests.support.processes import ROOT
from tests.support.server3 import APIV3_KEY, KEYS, MERCHANT_SERIAL, PUB_KEY_ID, other_key, write_keys


@pytest.fixture
def env(tmp_path):
    keys = write_keys(tmp_path)
    return {"WECHAT_PAY_VERSION": "v3", "WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
            "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_NOTIFY_URL": "https://shop.example.com/wechat/pay/v3/notify",
            "WECHAT_APIV3_KEY": APIV3_KEY, "WECHAT_MCH_PRIVATE_KEY_FILE": keys["apiclient_key.pem"],
            "WECHAT_MCH_SERIAL_NO": MERCHANT_SERIAL, "WECHAT_PAY_PUBLIC_KEY_FILE": keys["pub_key.pem"],
            "WECHAT_PAY_PUBLIC_KEY_ID": PUB_KEY_ID}


def problems(env, **changes):
    env = dict(env, **changes)
    for name in [n for n, v in env.items() if v is None]:
        del env[name]
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    return str(info.value)


def test_a_good_v3_configuration(env, tmp_path):
    config = Config.from_env(env)                     # no WECHAT_API_KEY needed
    assert (config.pay_version, config.sign_type, config.api_key) == ("v3", "RSA", "")
    assert config.refund_notify_url == "https://shop.example.com/wechat/refund/v3/notify"
    proxied = Config.from_env(dict(env, WECHAT_NOTIFY_URL="https://shop.example.com/pay/wx-callback"))
    assert proxied.refund_notify_url == "https://shop.example.com/pay/wx-callback"   # it takes both kinds
    assert APIV3_KEY not in repr(config) and APIV3_KEY not in str(config.describe())
    both = Config.from_env(dict(env, WECHAT_PLATFORM_CERT_DIR=str(tmp_path / "certs")))   # migration
    assert both.platform_cert_dir and both.pay_public_key_id
    Config.from_env(dict(env, WECHAT_PAY_PUBLIC_KEY_FILE="", WECHAT_PAY_PUBLIC_KEY_ID="",
                         WECHAT_PLATFORM_CERT_DIR=str(tmp_path)))                          # certificates only


def pem(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def test_each_problem_named(env, tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_private = pem(tmp_path, "ec.pem", ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ec_public = pem(tmp_path, "ec-pub.pem", ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    locked = pem(tmp_path, "locked.pem", other_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    junk = pem(tmp_path, "junk.pem", "not a key")
    a_file = pem(tmp_path, "a-file", "x")
    cases = [
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=str(tmp_path / "missing.pem")),
         "WECHAT_MCH_PRIVATE_KEY_FILE %s must be a readable file" % (tmp_path / "missing.pem")),
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=str(tmp_path)), "WECHAT_MCH_PRIVATE_KEY_FILE %s must be a readable file" % tmp_path),
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=junk), "WECHAT_MCH_PRIVATE_KEY_FILE %s is not a PEM private key" % junk),
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=ec_private), "WECHAT_MCH_PRIVATE_KEY_FILE %s is not an RSA private key" % ec_private),
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=locked), "WECHAT_MCH_PRIVATE_KEY_FILE %s is encrypted" % locked),
        (dict(WECHAT_MCH_PRIVATE_KEY_FILE=None), "WECHAT_MCH_PRIVATE_KEY_FILE is required for WeChat Pay v3"),
        (dict(WECHAT_APIV3_KEY=APIV3_KEY[:31]), "WECHAT_APIV3_KEY must be 32 ASCII characters"),
        (dict(WECHAT_APIV3_KEY=APIV3_KEY[:31] + "键"), "WECHAT_APIV3_KEY must be 32 ASCII characters"),
        (dict(WECHAT_APIV3_KEY=None), "WECHAT_APIV3_KEY is required for WeChat Pay v3"),
        (dict(WECHAT_MCH_SERIAL_NO=PUB_KEY_ID), "WECHAT_MCH_SERIAL_NO must be the hex serial number"),
        (dict(WECHAT_MCH_SERIAL_NO=None), "WECHAT_MCH_SERIAL_NO is required for WeChat Pay v3"),
        (dict(WECHAT_PAY_PUBLIC_KEY_ID="0119000000012026120200000000000001"),
         "WECHAT_PAY_PUBLIC_KEY_ID must start with PUB_KEY_ID_"),
        (dict(WECHAT_PAY_PUBLIC_KEY_ID=None), "WECHAT_PAY_PUBLIC_KEY_FILE and WECHAT_PAY_PUBLIC_KEY_ID go together"),
        (dict(WECHAT_PAY_PUBLIC_KEY_FILE=ec_public), "WECHAT_PAY_PUBLIC_KEY_FILE %s is not an RSA public key" % ec_public),
        (dict(WECHAT_PAY_PUBLIC_KEY_FILE=env["WECHAT_MCH_PRIVATE_KEY_FILE"]),
         "WECHAT_PAY_PUBLIC_KEY_FILE %s is not a PEM public key" % env["WECHAT_MCH_PRIVATE_KEY_FILE"]),
        (dict(WECHAT_PAY_PUBLIC_KEY_FILE=None, WECHAT_PAY_PUBLIC_KEY_ID=None),
         "WeChat Pay v3 needs WECHAT_PAY_PUBLIC_KEY_FILE and WECHAT_PAY_PUBLIC_KEY_ID (the WeChat Pay public key) "
         "or WECHAT_PLATFORM_CERT_DIR"),
        (dict(WECHAT_PLATFORM_CERT_DIR=a_file), "WECHAT_PLATFORM_CERT_DIR %s must be a writable directory" % a_file),
        (dict(WECHAT_NOTIFY_URL="https://shop.example.com/wechat/pay/notify"),
         "WECHAT_NOTIFY_URL points at the v2 path /wechat/pay/notify"),
    ]
    for changes, named in cases:
        message = problems(env, **changes)
        assert named in message, (changes, message)
        assert message.count(";") == 0, (changes, message)     # that one problem, nothing else
        assert "\n" not in message and APIV3_KEY[:31] not in message and "PRIVATE KEY" not in message
    assert "WECHAT_PAY_VERSION must be v2 or v3" in problems(env, WECHAT_PAY_VERSION="v4")


def test_a_v2_configuration_ignores_the_v3_names(env):
    v2 = dict(env, WECHAT_PAY_VERSION="v2", WECHAT_API_KEY=DEMO["api_key"],
              WECHAT_NOTIFY_URL="https://shop.example.com/wechat/pay/notify", WECHAT_MCH_PRIVATE_KEY_FILE="/nope")
    config = Config.from_env(v2)
    assert config.pay_version == "v2" and config.sign_type == "MD5"
    assert "WECHAT_API_KEY is required" in problems(dict(v2, WECHAT_API_KEY=None))


def test_run_server_names_every_v3_problem_in_one_line(env, tmp_path):
    bad = dict(env, PATH="/usr/bin:/bin", WECHAT_APIV3_KEY="short", WECHAT_PAY_PUBLIC_KEY_ID="KEY_1",
               WECHAT_MCH_PRIVATE_KEY_FILE=str(tmp_path / "nope.pem"), DATABASE_URL="sqlite:///:memory:")
    del bad["WECHAT_PAY_VERSION"]                       # the flag chooses v3
    r = subprocess.run([sys.executable, "run_server.py", "--pay-version", "v3"], cwd=ROOT, env=bad,
                       capture_output=True, text=True, timeout=30)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for named in ("WECHAT_APIV3_KEY must be", "WECHAT_PAY_PUBLIC_KEY_ID must start with PUB_KEY_ID_",
                  "WECHAT_MCH_PRIVATE_KEY_FILE %s must be a readable file" % (tmp_path / "nope.pem")):
        assert named in lines[0]
    assert "short" not in lines[0]


def manifest(tmp_path, mode, **changes):
    keys = write_keys(tmp_path)
    data = {"mchid": "10000100", "appid": DEMO["appid"], "apiv3_key": APIV3_KEY,
            "merchant_serial_no": MERCHANT_SERIAL, "merchant_private_key_file": keys["apiclient_key.pem"],
            "key_mode": mode, "wechatpay_public_key_id": PUB_KEY_ID, "wechatpay_public_key_file": keys["pub_key.pem"],
            "platform_serial_no": "3A1C0DE5", "platform_certificate_file": str(tmp_path / "platform.pem")}
    data.update(changes)
    path = tmp_path / "v3.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return str(path)


@pytest.mark.parametrize("mode", ["public-key", "certificate", "migration"])
def test_configuration_from_the_simulators_manifest(tmp_path, mode):
    from server import cli as run_server   # run_server.py's command line
    overrides = run_server.v3_overrides(run_server.read_v3_manifest(manifest(tmp_path, mode)), str(tmp_path))
    base = {"WECHAT_APP_SECRET": DEMO["app_secret"], "WECHAT_NOTIFY_URL": "http://127.0.0.1:8000/wechat/pay/v3/notify"}
    config = Config.from_env(base, overrides)
    assert (config.pay_version, config.mch_id, config.apiv3_key, config.mch_serial_no) == (
        "v3", "10000100", APIV3_KEY, MERCHANT_SERIAL)
    assert bool(config.pay_public_key_id) == (mode != "certificate")
    assert bool(config.platform_cert_dir) == (mode != "public-key")
    # a merchant key the simulator was given, not made: it comes from the environment
    given = run_server.v3_overrides(run_server.read_v3_manifest(
        manifest(tmp_path, mode, merchant_private_key_file=None)), str(tmp_path))
    assert given["mch_private_key_file"] is None
    with_key = dict(base, WECHAT_MCH_PRIVATE_KEY_FILE=write_keys(tmp_path)["apiclient_key.pem"])
    assert Config.from_env(with_key, given).mch_private_key_file == with_key["WECHAT_MCH_PRIVATE_KEY_FILE"]


def test_a_bad_manifest_is_one_line(tmp_path):
    from server import cli as run_server   # run_server.py's command line
    with pytest.raises(run_server.StartError) as info:
        run_server.read_v3_manifest(manifest(tmp_path, "public-key", apiv3_key=None))
    assert "lacks apiv3_key" in str(info.value)
    with pytest.raises(run_server.StartError) as info:
        run_server.read_v3_manifest(str(tmp_path / "none.json"))
    assert "cannot read the simulator's v3 manifest" in str(info.value)
    assert KEYS["merchant_private_key"][:40] not in str(info.value)
