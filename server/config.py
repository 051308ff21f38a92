"""Configuration: one frozen object built at start from the environment and flags (server/settings.py)."""
import dataclasses
import ssl
from urllib.parse import urlsplit

from server import settings
from server.http import server as httpserver
from server.settings import PROCESS, SHOP, V3 as V3_GROUP, readable
from server.wechat import upstream
from server.wechat.v3 import wire as v3_wire
from server.store import describe_url

V2, V3 = settings.V2_VERSION, settings.V3_VERSION
PAY_NOTIFY_PATH = "/wechat/pay/notify"
REFUND_NOTIFY_PATH = "/wechat/refund/notify"
PAY_NOTIFY_PATH_V3 = "/wechat/pay/v3/notify"
REFUND_NOTIFY_PATH_V3 = "/wechat/refund/v3/notify"


class ConfigError(ValueError):
    """Every problem with the configuration, in one message."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class _Shop:
    """What Config does; its fields are the shop's and v3's settings (server/settings.py)."""

    @classmethod
    def from_env(cls, environ, overrides=None):
        """Build from an environment mapping; overrides (flags) win. Raises ConfigError."""
        raw = settings.raw_values((SHOP, V3_GROUP), environ, overrides)
        version = V3 if raw.get("pay_version") == V3 else V2
        missing = ["%s is required%s" % (s.variable, " for WeChat Pay v3" if s.required == (V3,) else "")
                   for s in settings.of(SHOP, V3_GROUP) if version in s.required and raw.get(s.field) in (None, "")]
        problems = missing + _problems(raw) + _environment_proxy_problems(environ, raw)
        if problems:
            raise ConfigError(problems)
        return cls.from_values(raw)

    @classmethod
    def from_values(cls, raw):
        """Build from field values (strings allowed). Raises ConfigError."""
        problems = _problems(raw)
        if problems:
            raise ConfigError(problems)
        values = {field: settings.BY_FIELD[field].convert(value) if isinstance(value, str) else value
                  for field, value in raw.items() if value is not None}
        for pay_path, refund_path in ((PAY_NOTIFY_PATH, REFUND_NOTIFY_PATH), (PAY_NOTIFY_PATH_V3, REFUND_NOTIFY_PATH_V3)):
            if not values.get("refund_notify_url") and values["notify_url"].endswith(pay_path):
                values["refund_notify_url"] = values["notify_url"][:-len(pay_path)] + refund_path
        values["api_key"] = values.get("api_key") or ""   # optional in v3
        if values.get("pay_version") == V3:
            values["sign_type"] = v3_wire.RSA   # every v3 order's payment is signed with RSA
            # v3's notify endpoint takes refund notifications too: a notify URL of another path (a
            # proxy's) serves refunds as well, rather than refunds sent without notify_url (WeChat
            # would then notify only an address set in the merchant platform, if there is one)
            values["refund_notify_url"] = values.get("refund_notify_url") or values["notify_url"]
        return cls(**values)

    def describe(self):
        """A loggable view: secrets masked."""
        view = {k: ("***" if settings.BY_FIELD[k].secret is True else v) for k, v in dataclasses.asdict(self).items()}
        view["database_url"] = describe_url(self.database_url)
        return view


def _field(setting):
    """A Config field of the setting: its converted default (none if required), secrets out of repr."""
    spec = {"repr": not setting.secret}
    if setting.default is not None:
        spec["default"] = setting.convert(setting.default)
    return setting.field, type(setting.convert(setting.default or "0")), dataclasses.field(**spec)


# required fields first: a dataclass wants them before those with defaults
Config = dataclasses.make_dataclass(
    "Config", [_field(s) for s in sorted(settings.of(SHOP, V3_GROUP), key=lambda s: s.default is not None)],
    bases=(_Shop,), frozen=True, namespace={"__module__": __name__, "__doc__": "The shop's configuration: a "
                                            "field per setting of the shop and v3 groups (server/settings.py)."})


def _problems(raw):
    problems = list(settings.problems((SHOP,), raw).values())
    if bool(raw.get("cert_file")) != bool(raw.get("key_file")):
        problems.append("WECHAT_CERT_FILE and WECHAT_KEY_FILE go together")
    elif not problems:
        problems += _pem_problems(raw)
    if raw.get("pay_version") == V3:   # the v3 settings' own checks first, then what they need together
        problems += list(settings.problems((V3_GROUP,), raw).values()) + _v3_problems(raw)
    return problems


def _v3_problems(raw):
    """What WeChat Pay v3 needs: the APIv3 key, the merchant's RSA key and serial, and the
    WeChat Pay public key with its id, or a directory for the platform certificates (or
    both, while WeChat moves a merchant from certificates to the public key). Every key file
    is loaded now, so a bad one is named at start-up; a value is never repeated."""
    problems = []
    if raw.get("mch_private_key_file"):
        problems += _key_file_problems("WECHAT_MCH_PRIVATE_KEY_FILE", raw["mch_private_key_file"],
                                       v3_wire.load_private_key, "the merchant's apiclient_key.pem")
    public_key_file, public_key_id = raw.get("pay_public_key_file"), raw.get("pay_public_key_id")
    if bool(public_key_file) != bool(public_key_id):
        problems.append("WECHAT_PAY_PUBLIC_KEY_FILE and WECHAT_PAY_PUBLIC_KEY_ID go together")
    if public_key_file:
        problems += _key_file_problems("WECHAT_PAY_PUBLIC_KEY_FILE", public_key_file, v3_wire.load_public_key,
                                       "the WeChat Pay public key")
    cert_dir = raw.get("platform_cert_dir")
    if cert_dir and not settings.directory_ok(cert_dir):
        problems.append("WECHAT_PLATFORM_CERT_DIR %s must be a writable directory (or one that can be created)"
                        % cert_dir)
    if not public_key_file and not public_key_id and not cert_dir:
        problems.append("WeChat Pay v3 needs WECHAT_PAY_PUBLIC_KEY_FILE and WECHAT_PAY_PUBLIC_KEY_ID (the WeChat "
                        "Pay public key) or WECHAT_PLATFORM_CERT_DIR (platform certificates, fetched by the backend)")
    notify_url = raw.get("notify_url") or ""
    if urlsplit(notify_url).path.endswith(PAY_NOTIFY_PATH):
        problems.append("WECHAT_NOTIFY_URL points at the v2 path %s (in v3 it is the URL of %s)"
                        % (PAY_NOTIFY_PATH, PAY_NOTIFY_PATH_V3))
    return problems


def _key_file_problems(variable, path, load, what):
    if not readable(path):
        return ["%s %s must be a readable file (%s)" % (variable, path, what)]
    try:
        with open(path, "rb") as f:
            load(f.read(64 * 1024))
    except OSError as exc:
        return ["%s %s cannot be read (%s)" % (variable, path, exc.strerror or type(exc).__name__)]
    except v3_wire.KeyFileError as exc:
        return ["%s %s %s" % (variable, path, exc)]
    return []


def _pem_problems(raw):
    """Load the certificate files as the WeChat client will, so a bad one is named now."""
    problems = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # no system CAs: only the files are checked here
    if raw.get("ca_file"):
        try:
            context.load_verify_locations(raw["ca_file"])
        except (ssl.SSLError, ValueError) as exc:
            problems.append("WECHAT_CA_FILE %s is not a PEM CA certificate (%s)" % (raw["ca_file"], _ssl_reason(exc)))
    if raw.get("cert_file"):
        try:
            context.load_cert_chain(raw["cert_file"], raw["key_file"])
        except (ssl.SSLError, ValueError) as exc:
            problems.append("WECHAT_CERT_FILE %s and WECHAT_KEY_FILE %s are not a PEM certificate and its key (%s)"
                            % (raw["cert_file"], raw["key_file"], _ssl_reason(exc)))
    return problems


def _ssl_reason(exc):
    return getattr(exc, "reason", None) or str(exc)


def _environment_proxy_problems(environ, raw):
    """HTTPS_PROXY / HTTP_PROXY are used when WECHAT_PROXY is not set: checked now, named
    without their value (it may hold a password)."""
    if raw.get("proxy_url"):
        return []
    try:
        upstream.Proxy(environ=environ)
    except ValueError:
        return ["HTTPS_PROXY / HTTP_PROXY (from the environment, for WeChat calls) must be "
                "http://[user:password@]host:port"]
    return []


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """How the process serves (the process settings of server/settings.py), apart from the shop's."""
    sweep_interval: float
    log_level: str
    limits: httpserver.Limits
    event_loop: str
    access_log: bool
    xheaders: bool
    log_format: str = "text"
    metrics_listen: str = ""   # host:port of GET /metrics without the token ("": on the API's port)
    metrics_dir: str = ""      # --processes N: the processes' metrics files ("": a temporary directory)

    @classmethod
    def from_env(cls, environ, overrides=None):
        """From the environment, overrides (validated flags) winning. Raises ConfigError naming
        the variable."""
        raw = settings.raw_values((PROCESS,), environ, overrides)
        refused = settings.problems((PROCESS,), raw)
        v = {s.field: s.convert(str(raw[s.field])) for s in settings.of(PROCESS) if s.field not in refused}
        problems = list(refused.values())
        if "header_timeout" in v and "idle_timeout" in v and v["header_timeout"] > v["idle_timeout"]:
            problems.append("HEADER_TIMEOUT (%g) must not be above IDLE_TIMEOUT (%g)"
                            % (v["header_timeout"], v["idle_timeout"]))
        if v.get("event_loop") == "uvloop" and not _importable("uvloop"):
            problems.append("EVENT_LOOP=uvloop, but uvloop is not installed (pip install -r requirements.txt)")
        if problems:
            raise ConfigError(problems)
        limits = httpserver.Limits(v["header_timeout"], v["idle_timeout"], v["body_timeout"], v["max_connections"],
                                   v["send_timeout"])
        return cls(v["sweep_interval"], v["log_level"], limits, v["event_loop"], v["access_log"], v["xheaders"],
                   v["log_format"], v["metrics_listen"], v["metrics_dir"])


def _importable(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None
