"""The settings a client needs for a simulator, under the backend's names (`run_simulator.py env`, the --ready-file)."""
import json
import os
import re

from simulator import tls

FORMATS = ("sh", "dotenv", "json")
PAY_VERSIONS = ("v2", "v3")
# where a backend keeps the platform certificates it fetches from the simulator (run_server.py
# --simulator uses the same directory below --simulator-v3-dir)
BACKEND_CERT_DIR = "backend-platform-certs"
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")     # what sh's export and dotenv take as a name


class ReadyError(Exception):
    """A ready file that cannot be written or read; str() is one line naming it."""


def base_url(host, port, tls_on):
    """The URL a client on this machine reaches the simulator at (a wildcard address: loopback)."""
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    host = "[%s]" % host if ":" in host else host
    return "%s://%s:%d" % ("https" if tls_on else "http", host, port)


def settings(url, config, pay_version="v2", tls_files=None, v3=None):
    """{variable: value}: the first merchant of config and the first app it serves, the
    simulator's URL for both WeChat hosts, its CA and that merchant's client certificate (TLS),
    and in v3 that merchant's v3 keys and how the simulator signs (v3: a keys.V3Setup)."""
    merchant = next(iter(config.merchants.values()))
    app = config.apps[merchant.appids[0]]
    values = {"WECHAT_APPID": app.appid, "WECHAT_APP_SECRET": app.secret,
              "WECHAT_MCH_ID": merchant.mch_id, "WECHAT_API_KEY": merchant.api_key,
              "WECHAT_PAY_BASE_URL": url, "WECHAT_LOGIN_BASE_URL": url}
    if tls_files is not None:
        values.update(WECHAT_CA_FILE=tls_files.ca_cert, WECHAT_CERT_FILE=tls_files.client_cert,
                      WECHAT_KEY_FILE=tls_files.client_key)
    if pay_version == "v3":
        values.update(v3_settings(v3))
    return values


def v3_settings(v3):
    merchant = next(iter(v3.merchants.values()))
    values = {"WECHAT_PAY_VERSION": "v3", "WECHAT_APIV3_KEY": merchant.apiv3_key,
              "WECHAT_MCH_SERIAL_NO": merchant.serial_no}
    if merchant.private_key_file:     # a merchant key the simulator was given stays the merchant's
        values["WECHAT_MCH_PRIVATE_KEY_FILE"] = merchant.private_key_file
    if v3.key_mode in ("public-key", "migration"):
        values.update(WECHAT_PAY_PUBLIC_KEY_FILE=v3.wechatpay_public_key_file,
                      WECHAT_PAY_PUBLIC_KEY_ID=v3.public_key_id)
    if v3.key_mode in ("certificate", "migration"):
        values["WECHAT_PLATFORM_CERT_DIR"] = os.path.join(v3.directory, BACKEND_CERT_DIR)
    return values


def render(values, fmt):
    """sh: `export NAME='value'` lines; dotenv: NAME=value (quoted when needed); json: one object."""
    if fmt == "json":
        return json.dumps(values, indent=2, ensure_ascii=False) + "\n"
    if fmt == "sh":
        return "".join("export %s=%s\n" % (name, sh_quote(value)) for name, value in values.items())
    return "".join("%s=%s\n" % (name, dotenv_quote(value)) for name, value in values.items())


def sh_quote(value):
    return "'%s'" % value.replace("'", "'\\''")


def dotenv_quote(value):
    if _PLAIN.match(value):
        return value
    if "'" not in value and "\n" not in value:
        return "'%s'" % value       # taken literally by dotenv readers
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return '"%s"' % escaped


def write_ready(path, url, values):
    """The ready file: {"url", "pid", "settings"}, replaced atomically (mode 0600: it holds keys)."""
    data = json.dumps({"url": url, "pid": os.getpid(), "settings": values}, indent=2) + "\n"
    try:
        tls.write_file(os.path.abspath(path), data.encode("utf-8"), 0o600)
    except tls.TLSError as exc:
        raise ReadyError(str(exc)) from None


def remove_ready(path):
    """Remove a ready file (a left-over of a killed run, or ours on a clean stop) if there is one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ReadyError("%s: cannot remove: %s" % (path, exc.strerror)) from None


def read_ready(path):
    """The settings a running simulator wrote into its ready file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ReadyError("%s does not exist: no simulator started with --ready-file %s is serving "
                         "(yet)" % (path, path)) from None
    except (OSError, ValueError) as exc:
        raise ReadyError("%s: not a ready file: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise ReadyError("%s: not a ready file (no settings)" % path)
    settings = data["settings"]
    # the simulator writes names and strings only; anything else would be eval'd or crash render
    if not all(_NAME.match(k) and isinstance(v, str) for k, v in settings.items()):
        raise ReadyError("%s: not a ready file (settings must map variable names to strings)"
                         % path)
    return settings
