"""Configuration: one frozen object built at start from the environment and flags."""
import dataclasses
import os
import re
import ssl
from urllib.parse import urlsplit

from server import numbers
from server.http import server as httpserver
from server.wechat import upstream
from server.wechat.v2 import wire as wxpay
from server.wechat.v3 import wire as wxpay3
from server.store import describe_url


# env var -> (field, default); None default means required.
ENV = {
    "WECHAT_APPID": ("appid", None),
    "WECHAT_APP_SECRET": ("app_secret", None),
    "WECHAT_MCH_ID": ("mch_id", None),
    "WECHAT_API_KEY": ("api_key", None),
    "WECHAT_NOTIFY_URL": ("notify_url", None),
    "WECHAT_SIGN_TYPE": ("sign_type", wxpay.MD5),
    "WECHAT_LOGIN_BASE_URL": ("login_base_url", "https://api.weixin.qq.com"),
    "WECHAT_PAY_BASE_URL": ("pay_base_url", "https://api.mch.weixin.qq.com"),
    "WECHAT_TIMEOUT": ("timeout", "10"),
    "DATABASE_URL": ("database_url", "sqlite:///payments.db"),
    "CATALOG_FILE": ("catalog_file", ""),
    "SESSION_TTL": ("session_ttl", "7200"),
    "SPBILL_CREATE_IP": ("spbill_create_ip", "127.0.0.1"),
    "WECHAT_CERT_FILE": ("cert_file", ""),
    "WECHAT_KEY_FILE": ("key_file", ""),
    "WECHAT_CA_FILE": ("ca_file", ""),
    "WECHAT_REFUND_NOTIFY_URL": ("refund_notify_url", ""),
    "ADMIN_TOKEN": ("admin_token", ""),
    "WECHAT_PROXY": ("proxy_url", ""),
    "WECHAT_CONNECTIONS_PER_HOST": ("connections_per_host", "0"),
    "DATABASE_POOL_SIZE": ("database_pool_size", "10"),
    "DATABASE_TIMEOUT": ("database_timeout", "5"),
    "DATABASE_WAIT": ("database_wait", "30"),
    # WeChat Pay API v3 (WECHAT_PAY_VERSION=v3): see _v3_problems for what it needs
    "WECHAT_PAY_VERSION": ("pay_version", "v2"),
    "WECHAT_APIV3_KEY": ("apiv3_key", ""),
    "WECHAT_MCH_PRIVATE_KEY_FILE": ("mch_private_key_file", ""),
    "WECHAT_MCH_SERIAL_NO": ("mch_serial_no", ""),
    "WECHAT_PAY_PUBLIC_KEY_FILE": ("pay_public_key_file", ""),
    "WECHAT_PAY_PUBLIC_KEY_ID": ("pay_public_key_id", ""),
    "WECHAT_PLATFORM_CERT_DIR": ("platform_cert_dir", ""),
}
_SECRETS = {"app_secret", "api_key", "admin_token", "proxy_url", "apiv3_key"}   # a proxy URL may hold a password
V2, V3 = "v2", "v3"


PAY_NOTIFY_PATH = "/wechat/pay/notify"
REFUND_NOTIFY_PATH = "/wechat/refund/notify"
PAY_NOTIFY_PATH_V3 = "/wechat/pay/v3/notify"
REFUND_NOTIFY_PATH_V3 = "/wechat/refund/v3/notify"


class ConfigError(ValueError):
    """Every problem with the configuration, in one message."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Config:
    appid: str
    app_secret: str = dataclasses.field(repr=False)
    mch_id: str
    api_key: str = dataclasses.field(repr=False)
    notify_url: str
    sign_type: str = wxpay.MD5
    login_base_url: str = "https://api.weixin.qq.com"
    pay_base_url: str = "https://api.mch.weixin.qq.com"
    timeout: float = 10.0
    database_url: str = dataclasses.field(default="sqlite:///payments.db", repr=False)   # may hold a password
    catalog_file: str = ""
    session_ttl: int = 7200
    spbill_create_ip: str = "127.0.0.1"
    cert_file: str = ""   # PEM client certificate for /secapi/ (refunds)
    key_file: str = ""
    ca_file: str = ""     # extra CA to trust (the simulator's, with --tls)
    refund_notify_url: str = ""
    admin_token: str = dataclasses.field(default="", repr=False)
    proxy_url: str = dataclasses.field(default="", repr=False)   # "": HTTPS_PROXY / HTTP_PROXY / NO_PROXY
    connections_per_host: int = 0      # 0: httpserver.default_connections_per_host()
    database_pool_size: int = 10       # PostgreSQL: connections per process
    database_timeout: float = 5.0      # PostgreSQL: seconds for a statement, a lock, a pool wait
    database_wait: float = 30.0        # PostgreSQL: seconds start-up waits for an unreachable database
    pay_version: str = V2
    apiv3_key: str = dataclasses.field(default="", repr=False)
    mch_private_key_file: str = ""     # the merchant's apiclient_key.pem (v3 request signatures, paySign)
    mch_serial_no: str = ""            # the serial number of the merchant's API certificate
    pay_public_key_file: str = ""      # the WeChat Pay public key (public-key mode) ...
    pay_public_key_id: str = ""        # ... and its id, PUB_KEY_ID_...
    platform_cert_dir: str = ""        # platform-certificate mode: where fetched certificates are kept

    @classmethod
    def from_env(cls, environ, overrides=None):
        """Build from an environment mapping; overrides (flags) win. Raises ConfigError."""
        raw = {field: environ.get(var, default) for var, (field, default) in ENV.items()}
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        missing = ["%s is required%s" % (_VARIABLE[field], " for WeChat Pay v3" if field in _V3_REQUIRED else "")
                   for field in _required(raw) if raw.get(field) in (None, "")]
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
        values = dict(raw)
        values["timeout"] = float(raw["timeout"])
        values["session_ttl"] = int(raw["session_ttl"])
        values["connections_per_host"] = int(raw.get("connections_per_host", 0))
        values["database_pool_size"] = int(raw.get("database_pool_size", 10))
        values["database_timeout"] = float(raw.get("database_timeout", 5))
        values["database_wait"] = float(raw.get("database_wait", 30))
        for pay_path, refund_path in ((PAY_NOTIFY_PATH, REFUND_NOTIFY_PATH), (PAY_NOTIFY_PATH_V3, REFUND_NOTIFY_PATH_V3)):
            if not values.get("refund_notify_url") and values["notify_url"].endswith(pay_path):
                values["refund_notify_url"] = values["notify_url"][:-len(pay_path)] + refund_path
        values["api_key"] = values.get("api_key") or ""   # optional in v3
        if values.get("pay_version") == V3:
            values["sign_type"] = wxpay3.RSA   # every v3 order's payment is signed with RSA
            # v3's notify endpoint takes refund notifications too: a notify URL of another path (a
            # proxy's) serves refunds as well, rather than refunds sent without notify_url (WeChat
            # would then notify only an address set in the merchant platform, if there is one)
            values["refund_notify_url"] = values.get("refund_notify_url") or values["notify_url"]
        return cls(**values)

    def describe(self):
        """A loggable view: secrets masked."""
        view = {k: ("***" if k in _SECRETS else v) for k, v in dataclasses.asdict(self).items()}
        view["database_url"] = describe_url(self.database_url)
        return view


def _problems(raw):
    checks = [
        ("appid", lambda v: re.fullmatch(r"wx[0-9a-zA-Z]{16}", v), "WECHAT_APPID must look like wx + 16 characters"),
        ("mch_id", lambda v: re.fullmatch(r"[0-9]{6,32}", v), "WECHAT_MCH_ID must be digits"),
        ("api_key", _KEY.fullmatch, "WECHAT_API_KEY must be 32 letters and digits (the merchant API key, not the AppSecret)"),
        ("app_secret", _KEY.fullmatch, "WECHAT_APP_SECRET must be 32 letters and digits"),
        ("notify_url", _notify_url_ok, "WECHAT_NOTIFY_URL must be an http(s) URL without a query string"),
        ("sign_type", lambda v: v in wxpay.SIGN_TYPES or raw.get("pay_version") == V3,
         "WECHAT_SIGN_TYPE must be MD5 or HMAC-SHA256"),
        ("pay_version", lambda v: v in (V2, V3), "WECHAT_PAY_VERSION must be v2 or v3"),
        ("login_base_url", _url_ok, "WECHAT_LOGIN_BASE_URL must be an http(s) URL (with a port of 1 to 65535 if any)"),
        ("pay_base_url", _url_ok, "WECHAT_PAY_BASE_URL must be an http(s) URL (with a port of 1 to 65535 if any)"),
        ("timeout", _positive_number, "WECHAT_TIMEOUT must be a number of seconds from 0.1 to 3600"),
        ("database_url", _database_url_ok,
         "DATABASE_URL must be sqlite:///<path> (or sqlite:///:memory:) or postgresql://user[:password]@host[:port]/database "
         "(characters such as / ? # @ in the password percent-encoded)"),
        ("database_pool_size", lambda v: _whole_in(v, 1, 1000),
         "DATABASE_POOL_SIZE must be a whole number of connections from 1 to 1000"),
        ("database_timeout", _positive_number, "DATABASE_TIMEOUT must be a number of seconds from 0.1 to 3600"),
        ("database_wait", lambda v: _number_from(v, 0, 3600),
         "DATABASE_WAIT must be a number of seconds from 0 (no waiting) to 3600"),
        ("session_ttl", lambda v: _whole_in(v, 1, numbers.MAX_WHOLE),
         "SESSION_TTL must be a positive integer (seconds, at most %d digits)" % numbers.MAX_DIGITS),
        ("cert_file", _readable, "WECHAT_CERT_FILE must be a readable PEM file"),
        ("key_file", _readable, "WECHAT_KEY_FILE must be a readable PEM file"),
        ("ca_file", _readable, "WECHAT_CA_FILE must be a readable PEM file"),
        ("refund_notify_url", _notify_url_ok, "WECHAT_REFUND_NOTIFY_URL must be an http(s) URL without a query string"),
        ("admin_token", lambda v: len(v) >= 16 and v.isascii() and v.isprintable(),
         "ADMIN_TOKEN must be at least 16 printable ASCII characters"),
        ("proxy_url", _proxy_ok, "WECHAT_PROXY must be http://[user:password@]host:port"),
        ("connections_per_host", lambda v: _whole_in(v, 0, 10000),
         "WECHAT_CONNECTIONS_PER_HOST must be 0 (derived from the descriptor limit) or a whole number up to 10000"),
    ]
    problems = [_spaces_problem(field) if _padded(raw[field]) else msg for field, ok, msg in checks
                if raw.get(field) not in (None, "") and (_padded(raw[field]) or not ok(str(raw[field])))]
    if bool(raw.get("cert_file")) != bool(raw.get("key_file")):
        problems.append("WECHAT_CERT_FILE and WECHAT_KEY_FILE go together")
    elif not problems:
        problems += _pem_problems(raw)
    if raw.get("pay_version") == V3:
        problems += _v3_problems(raw)
    return problems


_KEY = re.compile(r"[0-9A-Za-z]{32}")
_VARIABLE = {field: var for var, (field, default) in ENV.items()}
_V2_ONLY = ("api_key",)   # v3 signs with RSA and encrypts with the APIv3 key
_V3_REQUIRED = ("apiv3_key", "mch_private_key_file", "mch_serial_no")
_APIV3_KEY = re.compile(r"[!-~]{32}")
_SERIAL_NO = re.compile(r"[0-9A-Fa-f]{8,64}")
_PUBLIC_KEY_ID = re.compile(re.escape(wxpay3.PUBLIC_KEY_ID_PREFIX) + r"[!-~]{1,100}")


def _required(raw):
    """The fields that must be set, for the configured API version."""
    common = [field for var, (field, default) in ENV.items() if default is None]
    if raw.get("pay_version") == V3:
        return [field for field in common if field not in _V2_ONLY] + list(_V3_REQUIRED)
    return common


def _v3_problems(raw):
    """What WeChat Pay v3 needs: the APIv3 key, the merchant's RSA key and serial, and the
    WeChat Pay public key with its id, or a directory for the platform certificates (or
    both, while WeChat moves a merchant from certificates to the public key). Every key file
    is loaded now, so a bad one is named at start-up; a value is never repeated."""
    problems = []
    if raw.get("apiv3_key") and not _APIV3_KEY.fullmatch(raw["apiv3_key"]):
        problems.append("WECHAT_APIV3_KEY must be 32 ASCII characters without spaces (the APIv3 key set in "
                        "the merchant platform for AES-256-GCM, not the v2 API key)")
    if raw.get("mch_serial_no") and not _SERIAL_NO.fullmatch(raw["mch_serial_no"]):
        problems.append("WECHAT_MCH_SERIAL_NO must be the hex serial number of the merchant API certificate "
                        "(40 hex digits), not a PUB_KEY_ID_")
    if raw.get("mch_private_key_file"):
        problems += _key_file_problems("WECHAT_MCH_PRIVATE_KEY_FILE", raw["mch_private_key_file"],
                                       wxpay3.load_private_key, "the merchant's apiclient_key.pem")
    public_key_file, public_key_id = raw.get("pay_public_key_file"), raw.get("pay_public_key_id")
    if bool(public_key_file) != bool(public_key_id):
        problems.append("WECHAT_PAY_PUBLIC_KEY_FILE and WECHAT_PAY_PUBLIC_KEY_ID go together")
    if public_key_id and not _PUBLIC_KEY_ID.fullmatch(public_key_id):
        problems.append("WECHAT_PAY_PUBLIC_KEY_ID must start with %s (the id shown with the WeChat Pay "
                        "public key in the merchant platform)" % wxpay3.PUBLIC_KEY_ID_PREFIX)
    if public_key_file:
        problems += _key_file_problems("WECHAT_PAY_PUBLIC_KEY_FILE", public_key_file, wxpay3.load_public_key,
                                       "the WeChat Pay public key")
    cert_dir = raw.get("platform_cert_dir")
    if cert_dir and not _dir_usable(cert_dir):
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
    if not _readable(path):
        return ["%s %s must be a readable file (%s)" % (variable, path, what)]
    try:
        with open(path, "rb") as f:
            load(f.read(64 * 1024))
    except OSError as exc:
        return ["%s %s cannot be read (%s)" % (variable, path, exc.strerror or type(exc).__name__)]
    except wxpay3.KeyFileError as exc:
        return ["%s %s %s" % (variable, path, exc)]
    return []


def _dir_usable(path):
    if os.path.isdir(path):
        return os.access(path, os.W_OK | os.X_OK)
    parent = os.path.dirname(os.path.abspath(path))
    return not os.path.exists(path) and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def _database_url_ok(value):
    if value.startswith("sqlite:///"):
        return len(value) > len("sqlite:///")
    if not value.startswith(("postgresql://", "postgres://")):
        return False
    try:
        parts = urlsplit(value)
        parts.port   # noqa: B018  (raises on a bad port)
    except ValueError:
        return False
    # an "@" after the host part means a password with an unescaped "/", "?" or "#": its tail
    # would be read as the database name (and shown); percent-encode it instead
    if "@" in parts.path + parts.query + parts.fragment:
        return False
    return bool(parts.path.strip("/")) and not parts.fragment and " " not in value


def _padded(value):
    return isinstance(value, str) and value != value.strip()


def _spaces_problem(field):
    return "%s has leading or trailing whitespace" % _VARIABLE.get(field, field)


def _pem_problems(raw):
    """Load the certificate files as the WeChat client will, so a bad one is named now."""
    problems = []
    context = ssl.create_default_context()
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


def _readable(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _url_ok(value):
    try:
        parts = urlsplit(value)
        port = parts.port   # raises ValueError for a port that is not 0 to 65535
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0
            and not any(c.isspace() for c in value))


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


def _proxy_ok(value):
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and bool(parts.hostname) and not parts.path.strip("/") and not parts.query


def _notify_url_ok(value):
    return _url_ok(value) and not urlsplit(value).query and len(value) <= 256


def _whole_in(text, minimum, maximum):
    try:
        numbers.parse_whole(text, minimum, maximum)
    except numbers.NumberRefused:
        return False
    return True


def _positive_number(value):
    try:
        return 0.1 <= float(value) < 3600
    except ValueError:
        return False


def _number_from(value, low, high):
    try:
        return low <= float(value) <= high
    except ValueError:
        return False


# -- the process's own settings (how it serves), apart from the shop's --------------
SERVER_ENV = {
    "SWEEP_INTERVAL": ("sweep_interval", "60"),
    "LOG_LEVEL": ("log_level", "INFO"),
    "HEADER_TIMEOUT": ("header_timeout", "10"),
    "BODY_TIMEOUT": ("body_timeout", "30"),
    "IDLE_TIMEOUT": ("idle_timeout", "75"),
    "MAX_CONNECTIONS": ("max_connections", "0"),
    "SEND_TIMEOUT": ("send_timeout", "30"),
    "EVENT_LOOP": ("event_loop", "asyncio"),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EVENT_LOOPS = ("asyncio", "uvloop")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    sweep_interval: float = 60.0
    log_level: str = "INFO"
    limits: httpserver.Limits = httpserver.Limits()
    event_loop: str = "asyncio"

    @classmethod
    def from_env(cls, environ, overrides=None):
        """From SERVER_ENV, overrides (validated flags) winning. Raises ConfigError naming
        the variable."""
        raw = {field: environ.get(var, default) for var, (field, default) in SERVER_ENV.items()}
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        problems = []

        def number(field, var, ok, what, convert=float):
            try:
                value = convert(str(raw[field]).strip())
                if ok(value):
                    return value
            except ValueError:
                pass
            problems.append("%s must be %s (got %r)" % (var, what, str(raw[field])[:32]))
            return None
        sweep = number("sweep_interval", "SWEEP_INTERVAL", lambda v: 0 <= v <= 86400,
                       "a number of seconds from 0 (off) to 86400")
        timeouts = [number(field, var, lambda v: 0.1 <= v <= 3600, "a number of seconds from 0.1 to 3600")
                    for var, field in (("HEADER_TIMEOUT", "header_timeout"), ("BODY_TIMEOUT", "body_timeout"),
                                       ("IDLE_TIMEOUT", "idle_timeout"), ("SEND_TIMEOUT", "send_timeout"))]
        if None not in timeouts and timeouts[0] > timeouts[2]:
            problems.append("HEADER_TIMEOUT (%g) must not be above IDLE_TIMEOUT (%g)" % (timeouts[0], timeouts[2]))
        limit = httpserver.descriptor_limit()
        most = (limit - 32) if limit else 10 ** 6
        max_connections = number("max_connections", "MAX_CONNECTIONS", lambda v: 0 <= v <= most,
                                 "0 (derived from the descriptor limit) or a whole number up to %d "
                                 "(the descriptor limit %s less 32)" % (most, limit), numbers.parse_whole)
        level = str(raw["log_level"]).strip().upper()
        if level not in LOG_LEVELS:
            problems.append("LOG_LEVEL must be one of %s (got %r)" % (", ".join(LOG_LEVELS), str(raw["log_level"])[:32]))
        event_loop = str(raw["event_loop"]).strip().lower()
        if event_loop not in EVENT_LOOPS:
            problems.append("EVENT_LOOP must be one of %s (got %r)" % (", ".join(EVENT_LOOPS), str(raw["event_loop"])[:32]))
        elif event_loop == "uvloop" and not _importable("uvloop"):
            problems.append("EVENT_LOOP=uvloop, but uvloop is not installed (pip install -r requirements.txt)")
        if problems:
            raise ConfigError(problems)
        header, body, idle, send = timeouts
        return cls(sweep, level, httpserver.Limits(header, idle, body, max_connections, send), event_loop)


def _importable(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None

