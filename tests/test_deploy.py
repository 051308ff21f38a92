"""The deployment files under deploy/: the systemd unit (systemd-analyze verify), the nginx site
(nginx -t, and nginx in front of a real backend), the example env file, and how they agree with
the backend. Without systemd-analyze or nginx those tests are skipped with one line locally and
fail in CI (CI set); .ci/run installs both."""
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server import settings
from server.app import DRAIN_SECONDS
from tests.support.processes import ROOT, Proc, free_port, port_open
from tests.support.shop import backend_env
from tests.support.sim import wait_output

DEPLOY = os.path.join(ROOT, "deploy")
UNIT = os.path.join(DEPLOY, "wxpay-tornado.service")
SITE = os.path.join(DEPLOY, "nginx", "wxpay-tornado.conf")
ENV_EXAMPLE = os.path.join(DEPLOY, "env.example")
INSTALL_DIR = "/opt/wxpay-tornado"            # where the unit expects the checkout and its .venv
VENV_PYTHON = INSTALL_DIR + "/.venv/bin/python"
CERT, KEY = "/etc/ssl/certs/shop.example.com.crt", "/etc/ssl/private/shop.example.com.key"
SERVER_NAME = "shop.example.com"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def tool(name):
    """The path of a system tool, or skipped (failed in CI) without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path:
        return path
    reason = "no %s (apt-get install %s)" % (name, "systemd" if name == "systemd-analyze" else name)
    if os.environ.get("CI"):
        pytest.fail("deployment tests cannot run in CI: " + reason)
    pytest.skip(reason)


def unit_values(text):
    """{key: [values]} of the unit's [Service], [Unit] and [Install] lines (comments dropped)."""
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def unit_for_this_machine(tmp_path, text=None):
    """The unit, its paths made ones that exist here (the checkout, this Python), in tmp_path
    under its own name: systemd-analyze checks that ExecStart's program exists and is executable."""
    text = text if text is not None else read(UNIT)
    assert VENV_PYTHON in text and INSTALL_DIR + "/run_server.py" in text
    text = text.replace(VENV_PYTHON, sys.executable).replace(INSTALL_DIR, ROOT)
    path = tmp_path / "wxpay-tornado.service"
    path.write_text(text, encoding="utf-8")
    return path


def verify(path):
    done = subprocess.run([tool("systemd-analyze"), "verify", str(path)], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_the_unit_verifies_without_a_word(tmp_path):
    # systemd-analyze exits 0 on a line it cannot parse (it only prints it): any output fails
    assert verify(unit_for_this_machine(tmp_path)) == (0, "")


def test_verify_reports_a_broken_unit(tmp_path):
    """The check above can fail: a value systemd cannot parse is printed (exit code 0 or not)."""
    text = read(UNIT).replace("Restart=on-failure", "Restart=sometimes")
    _, output = verify(unit_for_this_machine(tmp_path, text))
    assert "Failed to parse" in output and "sometimes" in output


def server_help():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "run_server.py"), "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_units_start_command_uses_real_flags_on_loopback():
    unit = unit_values(read(UNIT))
    program, script, *args = unit["ExecStart"][0].split()
    assert (program, script) == (VENV_PYTHON, INSTALL_DIR + "/run_server.py")
    assert unit["WorkingDirectory"] == [INSTALL_DIR]
    usage = server_help()
    flags = [arg for arg in args if arg.startswith("--")]
    assert flags and [flag for flag in flags if not re.search(r"\s%s\b" % re.escape(flag), usage)] == []
    assert re.search(r"\s--processes\b", usage)   # what the unit's comment and docs/deployment.md add
    options = dict(zip(args, args[1:]))
    # loopback only, since the backend trusts the proxy's X-Real-IP (--xheaders): nginx's upstream
    assert options["--host"] == "127.0.0.1" and "--xheaders" in args
    assert re.search(r"^\s*server %s;" % re.escape("%s:%s" % (options["--host"], options["--port"])), read(SITE), re.M)


def test_the_unit_stops_by_draining_and_runs_unprivileged():
    unit = unit_values(read(UNIT))
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert float(unit["TimeoutStopSec"][0]) > DRAIN_SECONDS   # SIGKILL only after the drain's end
    assert unit["User"][0] not in ("root", "0") and unit["NoNewPrivileges"] == ["yes"]
    assert unit["EnvironmentFile"] == ["/etc/wxpay-tornado/env"] and unit["ProtectSystem"] == ["strict"]
    # the example's SQLite file lies in the one directory the unit lets the service write
    state_dir = "/var/lib/" + unit["StateDirectory"][0]
    assert unit["ReadWritePaths"] == [state_dir]
    assert env_example(commented=False)["DATABASE_URL"] == ["sqlite:///%s/payments.db" % state_dir]


def env_example(commented=True):
    """{NAME: [values]} of the example env file, in order; with `commented`, the alternatives
    written `# NAME=value` too."""
    found = {}
    for mark, name, value in re.findall(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$", read(ENV_EXAMPLE), re.M):
        if commented or not mark:
            found.setdefault(name, []).append(value)
    return found


def test_env_example_lists_every_setting_and_nothing_else():
    names = set(env_example())
    variables = {setting.variable for setting in settings.SETTINGS}
    assert names - variables == set(), "not settings of server/settings.py"
    assert variables - names == set(), "settings the example does not list"


def test_env_example_values_are_accepted():
    by_variable = {setting.variable: setting for setting in settings.SETTINGS}
    for name, values in env_example().items():
        setting = by_variable[name]
        if setting.check is settings.readable:
            continue   # a path on the target host
        for value in filter(None, values):
            assert setting.reason(value) is None, (name, value)


def test_env_example_holds_no_secret():
    secret = {setting.variable for setting in settings.SETTINGS if setting.secret is True}
    for name, values in env_example().items():
        for value in values if name in secret else ():
            # keys and tokens empty; a proxy's URL without a password
            assert value == "" or (value.startswith("http://") and urlsplit(value).password is None), name


def self_signed(directory):
    """A certificate and key for SERVER_NAME and 127.0.0.1, for the site's placeholder paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "site.crt", directory / "site.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def nginx_config(tmp_path, site_text):
    """A whole nginx configuration around the site (nginx -t checks only whole ones): events {},
    http { include the site }, its temp files and logs in tmp_path, a test certificate."""
    assert CERT in site_text and KEY in site_text
    cert, key = self_signed(tmp_path)
    site = tmp_path / "site.conf"
    site.write_text(site_text.replace(CERT, str(cert)).replace(KEY, str(key)), encoding="utf-8")
    temp = "\n".join("    %s_temp_path %s;" % (kind, tmp_path / kind)
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n%s\n    access_log %s;\n    include %s;\n}\n"
                    % (temp, tmp_path / "access.log", site), encoding="utf-8")
    return conf


def nginx_command(tmp_path, conf, *extra):
    return [tool("nginx"), "-c", str(conf), "-e", "stderr", "-g",
            "pid %s; error_log stderr;%s" % (tmp_path / "nginx.pid", "".join(" " + e for e in extra))]


def nginx_test(tmp_path, site_text):
    conf = nginx_config(tmp_path, site_text)
    done = subprocess.run([*nginx_command(tmp_path, conf), "-t"], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


def test_nginx_accepts_the_site_without_a_warning(tmp_path):
    code, output = nginx_test(tmp_path, read(SITE))
    assert code == 0 and "test is successful" in output, output
    assert "[warn]" not in output and "[emerg]" not in output, output


def test_nginx_test_refuses_a_broken_site(tmp_path):
    """The check above can fail: a directive nginx does not know is refused."""
    code, output = nginx_test(tmp_path, read(SITE).replace("client_max_body_size 16k;", "client_max_body 16k;"))
    assert code != 0 and "[emerg]" in output


def test_the_sites_body_limits_are_the_backends():
    from server.http.handlers import MAX_JSON_BYTES
    from server.wechat import MAX_NOTIFY_BYTES
    site = read(SITE)
    limits = re.findall(r"client_max_body_size (\d+)k;", site)
    assert [int(k) * 1024 for k in limits] == [MAX_JSON_BYTES, MAX_NOTIFY_BYTES]
    # the backend's IDLE_TIMEOUT outlasts nginx's pooled upstream connections
    upstream = re.search(r"^upstream wxpay_tornado \{(.*?)^\}", site, re.M | re.S).group(1)
    pooled = re.findall(r"^\s*keepalive_timeout (\d+)s;", upstream, re.M)
    assert len(pooled) == 1 and float(settings.BY_FIELD["idle_timeout"].default) > int(pooled[0])


@pytest.fixture
def backend(tmp_path):
    """A real run_server.py as the unit runs it (--xheaders, on loopback), logging every request."""
    port = free_port()
    env = dict(backend_env("http://127.0.0.1:9", port, "MD5"), ACCESS_LOG="1",
               DATABASE_URL="sqlite:///%s" % (tmp_path / "payments.db"))
    with Proc("run_server.py", ["--host", "127.0.0.1", "--port", str(port), "--xheaders"], env=env,
              port=port) as proc:
        yield proc


@pytest.fixture
def nginx_program():
    return tool("nginx")


@pytest.fixture
def nginx(tmp_path, nginx_program, backend):
    """nginx in the foreground with the site, its ports free ones on 127.0.0.1 and its upstream the backend."""
    http_port, https_port = free_port(), free_port()
    text = read(SITE)
    for old, new in (("listen 80;", "listen 127.0.0.1:%d;" % http_port),
                     ("listen 443 ssl http2;", "listen 127.0.0.1:%d ssl http2;" % https_port),
                     ("server 127.0.0.1:8000;", "server 127.0.0.1:%d;" % backend.port)):
        assert old in text
        text = text.replace(old, new)
    text = re.sub(r"^\s*listen \[::\].*$", "", text, flags=re.M)   # this machine may have no IPv6
    conf = nginx_config(tmp_path, text)
    proc = subprocess.Popen(nginx_command(tmp_path, conf, "daemon off;", "master_process off;"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (port_open(http_port) and port_open(https_port)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    yield http_port, https_port, tmp_path / "site.crt"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)


def https(nginx, method, path, body=None, source="127.0.0.1"):
    _, port, cert = nginx
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30, source_address=(source, 0))
    conn.request(method, path, body=body, headers={"Host": SERVER_NAME})
    answer = conn.getresponse()
    result = answer.status, answer.getheader("Content-Type") or "", answer.read()
    conn.close()
    return result


def test_nginx_in_front_of_the_backend(nginx, backend):
    http_port = nginx[0]
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    conn.request("GET", "/api/products?x=1", headers={"Host": SERVER_NAME})
    answer = conn.getresponse()
    assert (answer.status, answer.getheader("Location")) == (301, "https://%s/api/products?x=1" % SERVER_NAME)
    conn.close()

    status, _, body = https(nginx, "GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    # the backend takes the client's address from nginx's X-Real-IP, not nginx's own
    assert https(nginx, "GET", "/api/products", source="127.0.0.5")[0] == 200
    wait_output(backend, "GET /api/products (127.0.0.5)")

    # a JSON body over the backend's 16 KiB never reaches it; nginx answers in the backend's shape
    status, kind, body = https(nginx, "POST", "/api/login", b"x" * 20000)
    assert (status, kind, json.loads(body)["error"]["code"]) == (413, "application/json", "BODY_TOO_LARGE")
    # a notification up to 64 KiB does (the backend answers it in WeChat's XML); over it, nginx's 413
    status, kind, _ = https(nginx, "POST", "/wechat/pay/notify", b"<xml>" + b"x" * 30000 + b"</xml>")
    assert kind.startswith("text/xml")
    # the backend logs its requests in order: the notification's line comes after any of the login
    assert "/api/login" not in wait_output(backend, "POST /wechat/pay/notify")
    assert https(nginx, "POST", "/wechat/pay/v3/notify", b"x" * 70000)[0] == 413
