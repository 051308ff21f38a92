"""The simulator in CI: `run_simulator.py env` (the backend's settings for a simulator),
GET /sim/health, --ready-file, and docs/simulator-in-ci.md's script run as written."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from server import settings as backend_settings
from simulator import __version__, cli as simulator_cli
from tests.support import DEMO, docblocks
from tests.support.processes import ROOT, Proc, free_port
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e
SIMULATOR = os.path.join(ROOT, "run_simulator.py")
BACKEND_NAMES = {s.variable for s in backend_settings.SETTINGS}


def env_command(*args):
    """`run_simulator.py env ARGS`, run in this process: the entry script's own main (the
    subcommand's process-level path is run by eval_env and the docs' CI script below)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = simulator_cli.main(["env", *args])
        except SystemExit as exc:    # argparse's refusals
            code = exc.code
    return subprocess.CompletedProcess(["env", *args], code or 0, out.getvalue(), err.getvalue())


def env_json(*args):
    done = env_command(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_file(path, proc, timeout=30):
    """The ready file's JSON, once the process has written it."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.proc.poll() is None, proc.output()
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.02)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_env_gives_the_backend_settings_of_a_plain_v2_simulator():
    assert env_json("--port", "9123") == {
        "WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
        "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
        "WECHAT_PAY_BASE_URL": "http://127.0.0.1:9123", "WECHAT_LOGIN_BASE_URL": "http://127.0.0.1:9123"}


def test_env_follows_the_credential_flags_and_the_listening_address():
    settings = env_json("--host", "0.0.0.0", "--port", "9124", "--appid", "wx0123456789abcdef",
                        "--app-secret", "s" * 32, "--mch-id", "1234567", "--api-key", "k" * 32)
    assert settings["WECHAT_APPID"] == "wx0123456789abcdef" and settings["WECHAT_APP_SECRET"] == "s" * 32
    assert settings["WECHAT_MCH_ID"] == "1234567" and settings["WECHAT_API_KEY"] == "k" * 32
    # a wildcard address is reached over loopback
    assert settings["WECHAT_PAY_BASE_URL"] == "http://127.0.0.1:9124"


def test_env_with_a_config_file_names_its_first_merchant_and_that_merchants_app(tmp_path):
    config = tmp_path / "merchants.json"
    config.write_text(json.dumps({
        "apps": [{"appid": "wxaaaaaaaaaaaaaaaa", "secret": "a" * 32},
                 {"appid": "wxbbbbbbbbbbbbbbbb", "secret": "b" * 32}],
        "merchants": [{"mch_id": "2000001", "api_key": "c" * 32, "appids": ["wxbbbbbbbbbbbbbbbb"]},
                      {"mch_id": "2000002", "api_key": "d" * 32, "appids": ["wxaaaaaaaaaaaaaaaa"]}]}))
    settings = env_json("--config", str(config))
    assert (settings["WECHAT_APPID"], settings["WECHAT_APP_SECRET"], settings["WECHAT_MCH_ID"],
            settings["WECHAT_API_KEY"]) == ("wxbbbbbbbbbbbbbbbb", "b" * 32, "2000001", "c" * 32)


def test_env_with_tls_names_the_simulators_ca_and_the_merchant_certificate(tmp_path):
    settings = env_json("--tls", "--tls-dir", str(tmp_path / "tls"), "--port", "9125")
    assert settings["WECHAT_PAY_BASE_URL"] == "https://127.0.0.1:9125"
    assert settings["WECHAT_CA_FILE"] == str(tmp_path / "tls" / "ca.pem")
    assert settings["WECHAT_CERT_FILE"] == str(tmp_path / "tls" / "merchant.pem")
    assert settings["WECHAT_KEY_FILE"] == str(tmp_path / "tls" / "merchant-key.pem")
    assert all(os.path.isfile(settings[name]) for name in ("WECHAT_CA_FILE", "WECHAT_CERT_FILE", "WECHAT_KEY_FILE"))


@pytest.mark.parametrize("mode", ["public-key", "certificate", "migration"])
def test_env_in_v3_prepares_the_keys_and_names_them(tmp_path, mode):
    v3_dir = tmp_path / "v3"
    settings = env_json("--pay-version", "v3", "--v3-dir", str(v3_dir), "--v3-key-mode", mode)
    manifest = json.loads((v3_dir / "v3.json").read_text())
    assert settings["WECHAT_PAY_VERSION"] == "v3"
    assert settings["WECHAT_APIV3_KEY"] == DEMO["apiv3_key"] == manifest["apiv3_key"]
    assert settings["WECHAT_MCH_SERIAL_NO"] == manifest["merchant_serial_no"]
    assert settings["WECHAT_MCH_PRIVATE_KEY_FILE"] == manifest["merchant_private_key_file"]
    assert os.path.isfile(settings["WECHAT_MCH_PRIVATE_KEY_FILE"])
    public_key = mode in ("public-key", "migration")
    assert ("WECHAT_PAY_PUBLIC_KEY_FILE" in settings) == public_key
    if public_key:
        assert settings["WECHAT_PAY_PUBLIC_KEY_FILE"] == manifest["wechatpay_public_key_file"]
        assert settings["WECHAT_PAY_PUBLIC_KEY_ID"] == manifest["wechatpay_public_key_id"]
    assert ("WECHAT_PLATFORM_CERT_DIR" in settings) == (mode != "public-key")


@pytest.mark.parametrize("args", [
    [], ["--tls"], ["--pay-version", "v3"], ["--pay-version", "v3", "--v3-key-mode", "migration", "--tls"]])
def test_every_name_env_prints_is_a_backend_setting(tmp_path, args):
    settings = env_json("--tls-dir", str(tmp_path / "tls"), "--v3-dir", str(tmp_path / "v3"), *args)
    assert set(settings) <= BACKEND_NAMES, set(settings) - BACKEND_NAMES


def test_env_formats_sh_and_dotenv_quote_what_the_shell_would_split(tmp_path):
    config = tmp_path / "odd dir"
    config.mkdir()
    args = ("--tls", "--tls-dir", str(config), "--port", "9126")
    settings = env_json(*args)
    sh = env_command(*args, "--format", "sh")
    assert sh.returncode == 0, sh.stderr
    assert "export WECHAT_CA_FILE='%s'\n" % settings["WECHAT_CA_FILE"] in sh.stdout
    assert all(line.startswith("export WECHAT_") for line in sh.stdout.splitlines())
    shown = subprocess.run(["bash", "-c", 'eval "$1"; printf %s "$WECHAT_CA_FILE"', "-", sh.stdout],
                           capture_output=True, text=True, check=True).stdout
    assert shown == settings["WECHAT_CA_FILE"]
    dotenv = env_command(*args, "--format", "dotenv").stdout.splitlines()
    assert "WECHAT_APPID=%s" % DEMO["appid"] in dotenv
    assert "WECHAT_CA_FILE='%s'" % settings["WECHAT_CA_FILE"] in dotenv


def test_the_default_format_is_sh():
    assert env_command("--port", "9127").stdout.startswith("export WECHAT_")


@pytest.mark.parametrize("args, problem", [
    (["--port", "0"], "--port 0"),
    (["--ready-file", "/nonexistent/ready.json"], "/nonexistent/ready.json"),
    (["--appid", "wx1", "--config", "x.json"], "--config cannot be combined"),
])
def test_env_refuses_what_it_cannot_answer_in_one_line(args, problem):
    done = env_command(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("run_simulator.py env: error: ") and problem in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("settings", [
    {"WECHAT_APPID": 5},                                  # not a string: was a traceback
    {"WECHAT_APPID": "wx1", "X=1; touch pwned #": "v"},   # not a name: would be eval'd
    {"": "v"},
])
def test_env_refuses_a_ready_file_whose_settings_are_not_names_to_strings(tmp_path, settings):
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 1, "settings": settings}))
    for fmt in ("sh", "dotenv", "json"):
        done = env_command("--ready-file", str(ready), "--format", fmt)
        assert done.returncode == 2 and done.stdout == "", (fmt, done)
        assert done.stderr.startswith("run_simulator.py env: error: %s: not a ready file" % ready)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_ready_file_holds_the_url_and_the_settings_and_goes_with_the_simulator(tmp_path):
    ready = tmp_path / "ready.json"
    ready.write_text("{}")      # a left-over of a killed run is replaced, never taken for ready
    args = ["--port", "0", "--ready-file", str(ready), "--v3-dir", str(tmp_path / "v3")]
    with Proc("run_simulator.py", args) as sim:
        info = wait_file(str(ready), sim)
        if info == {}:
            info = wait_file_changed(str(ready), sim)
        url = info["url"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert info["settings"]["WECHAT_PAY_BASE_URL"] == url
        assert info["settings"] == env_json("--ready-file", str(ready))
        health = requests.get(url + "/sim/health", timeout=5)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "version": __version__, "pay_version": "v2",
                                 "key_mode": "public-key", "tls": False}
        assert sorted(os.listdir(tmp_path)) == ["ready.json", "v3"]     # no temporary file left
        assert sim.stop() == 0
    assert not ready.exists()


def wait_file_changed(path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        info = wait_file(path, proc, timeout)
        if info:
            return info
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.02)


def test_health_over_tls_in_v3(tmp_path):
    ready = tmp_path / "ready.json"
    args = ["--port", "0", "--ready-file", str(ready), "--tls", "--tls-dir", str(tmp_path / "tls"),
            "--pay-version", "v3", "--v3-dir", str(tmp_path / "v3"), "--v3-key-mode", "certificate"]
    with Proc("run_simulator.py", args) as sim:
        info = wait_file(str(ready), sim)
        assert info["url"].startswith("https://127.0.0.1:")
        assert info["settings"]["WECHAT_PAY_VERSION"] == "v3"
        health = requests.get(info["url"] + "/sim/health", verify=info["settings"]["WECHAT_CA_FILE"], timeout=5)
        assert health.json() == {"status": "ok", "version": __version__, "pay_version": "v3",
                                 "key_mode": "certificate", "tls": True}


def test_a_ready_file_that_cannot_be_written_stops_start_up_in_one_line(tmp_path):
    args = ["--port", "0", "--ready-file", str(tmp_path / "missing" / "ready.json"),
            "--v3-dir", str(tmp_path / "v3")]
    with Proc("run_simulator.py", args) as sim:
        assert sim.wait(30) == 2
        assert "run_simulator.py: error: --ready-file" in sim.output()


def test_env_before_start_prepares_the_v3_keys_the_simulator_then_serves_with(tmp_path):
    v3_dir, port = str(tmp_path / "v3"), free_port()
    settings = env_json("--pay-version", "v3", "--v3-dir", v3_dir, "--port", str(port))
    with Proc("run_simulator.py", ["--pay-version", "v3", "--v3-dir", v3_dir, "--port", str(port)], port=port):
        keys = requests.get("http://127.0.0.1:%d/sim/v3/keys" % port, timeout=5).json()
    assert keys["merchant_serial_no"] == settings["WECHAT_MCH_SERIAL_NO"]
    assert keys["wechatpay_public_key_file"] == settings["WECHAT_PAY_PUBLIC_KEY_FILE"]


def eval_env(*args):
    """The WECHAT_ variables a shell has after `eval "$(run_simulator.py env ARGS)"`."""
    script = 'eval "$("$0" "$1" env "${@:2}")" && "$0" -c "import json, os; print(json.dumps(dict(os.environ)))"'
    done = subprocess.run(["bash", "-c", script, sys.executable, SIMULATOR, *args], capture_output=True,
                          text=True, cwd=ROOT, env={"PATH": os.environ.get("PATH", "")}, timeout=60)
    assert done.returncode == 0, done.stderr
    return {k: v for k, v in json.loads(done.stdout).items() if k.startswith("WECHAT_")}


@pytest.mark.parametrize("extra, notify_path", [
    (["--tls"], "/wechat/pay/notify"),
    (["--pay-version", "v3", "--v3-key-mode", "migration"], "/wechat/pay/v3/notify"),
])
def test_a_backend_configured_from_env_buys_through_that_simulator(tmp_path, extra, notify_path):
    sim_port, port = free_port(), free_port()
    args = ["--port", str(sim_port), "--time-scale", "0.01", "--tls-dir", str(tmp_path / "tls"),
            "--v3-dir", str(tmp_path / "v3"), *extra]
    environ = eval_env(*args)
    environ["WECHAT_NOTIFY_URL"] = "http://127.0.0.1:%d%s" % (port, notify_path)
    shop = Shop(tmp_path)
    try:
        shop.sim = Proc("run_simulator.py", args, port=sim_port)
        shop.sim.url = environ["WECHAT_PAY_BASE_URL"]
        shop.backend = Proc("run_server.py", ["--port", str(port), "--database-url", "sqlite:///" + shop.db],
                            env=environ, port=port)
        buy_through(shop, environ)
    finally:
        shop.stop()


def buy_through(shop, environ):
    verify = environ.get("WECHAT_CA_FILE", True)
    code = requests.post(shop.sim.url + "/sim/login", json={"appid": DEMO["appid"], "user": "ci"},
                         verify=verify, timeout=5).json()["code"]
    token = requests.post(shop.backend.url + "/api/login", json={"code": code}, timeout=10).json()["token"]
    auth = {"Authorization": "Bearer " + token}
    order = shop.create(auth)
    paid = requests.post(shop.sim.url + "/sim/pay", json=dict(order["payment"], appid=DEMO["appid"]),
                         verify=verify, timeout=10)
    assert paid.status_code == 200, paid.text
    shop.wait_status(auth, order["out_trade_no"], "SUCCESS")


# --- docs/simulator-in-ci.md's script -----------------------------------------------

def ci_script():
    blocks = [b for b in docblocks.parse("docs/simulator-in-ci.md", docblocks.read("docs/simulator-in-ci.md"))[0]
              if b.kind == "shell"]
    assert len(blocks) == 1, "the page has one runnable script"
    return blocks[0].text


def checkout(tmp_path):
    """A directory like the reader's checkout: the repository's files linked, .venv this Python."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in os.listdir(ROOT):
        if name not in {".git", ".venv", "sim-tls", "sim-v3", "payments.db", ".pytest_cache"}:
            os.symlink(os.path.join(ROOT, name), root / name)
    os.symlink(sys.prefix, root / ".venv")
    return root


def test_the_ci_script_of_the_docs_runs_and_stops_its_simulator(tmp_path):
    root = checkout(tmp_path)
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", ci_script()],
                            cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("the script timed out:\n" + out)
    assert proc.returncode == 0, out
    assert '"status": "ok"' in out and "return_code=SUCCESS" in out and "result_code=SUCCESS" in out, out
    assert "WeChat simulator stopped" in out, out
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    assert leftovers == "", "the script left processes running: " + leftovers
