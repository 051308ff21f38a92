"""Configuration: one frozen object built at start from the environment and flags."""
import dataclasses
import os
import re
from urllib.parse import urlsplit

from server import wxpay

DEMO_APPID = "wxd930ea5d5a258f4f"
DEMO_APP_SECRET = "8a2f3c4d5e6f70819a0b1c2d3e4f5061"
DEMO_MCH_ID = "10000100"
DEMO_API_KEY = "192006250b4c09247ec02edce69f6a2d"

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
}
_SECRETS = {"app_secret", "api_key", "admin_token"}


PAY_NOTIFY_PATH = "/wechat/pay/notify"
REFUND_NOTIFY_PATH = "/wechat/refund/notify"


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
    database_url: str = "sqlite:///payments.db"
    catalog_file: str = ""
    session_ttl: int = 7200
    spbill_create_ip: str = "127.0.0.1"
    cert_file: str = ""   # PEM client certificate for /secapi/ (refunds)
    key_file: str = ""
    ca_file: str = ""     # extra CA to trust (the simulator's, with --tls)
    refund_notify_url: str = ""
    admin_token: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_env(cls, environ, overrides=None):
        """Build from an environment mapping; overrides (flags) win. Raises ConfigError."""
        raw = {field: environ.get(var, default) for var, (field, default) in ENV.items()}
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        missing = ["%s is required" % var for var, (field, default) in ENV.items()
                   if default is None and raw[field] in (None, "")]
        problems = missing + _problems(raw)
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
        if not values.get("refund_notify_url") and values["notify_url"].endswith(PAY_NOTIFY_PATH):
            values["refund_notify_url"] = values["notify_url"][:-len(PAY_NOTIFY_PATH)] + REFUND_NOTIFY_PATH
        return cls(**values)

    def describe(self):
        """A loggable view: secrets masked."""
        return {k: ("***" if k in _SECRETS else v) for k, v in dataclasses.asdict(self).items()}


def _problems(raw):
    checks = [
        ("appid", lambda v: re.fullmatch(r"wx[0-9a-zA-Z]{16}", v), "WECHAT_APPID must look like wx + 16 characters"),
        ("mch_id", lambda v: re.fullmatch(r"[0-9]{6,32}", v), "WECHAT_MCH_ID must be digits"),
        ("api_key", lambda v: len(v) == 32 and v.isascii(), "WECHAT_API_KEY must be 32 ASCII characters (the merchant API key, not the AppSecret)"),
        ("app_secret", lambda v: len(v) == 32 and v.isascii(), "WECHAT_APP_SECRET must be 32 ASCII characters"),
        ("notify_url", _notify_url_ok, "WECHAT_NOTIFY_URL must be an http(s) URL without a query string"),
        ("sign_type", lambda v: v in wxpay.SIGN_TYPES, "WECHAT_SIGN_TYPE must be MD5 or HMAC-SHA256"),
        ("login_base_url", _url_ok, "WECHAT_LOGIN_BASE_URL must be an http(s) URL"),
        ("pay_base_url", _url_ok, "WECHAT_PAY_BASE_URL must be an http(s) URL"),
        ("timeout", _positive_number, "WECHAT_TIMEOUT must be a positive number of seconds"),
        ("database_url", lambda v: v.startswith("sqlite:///") and len(v) > len("sqlite:///"), "DATABASE_URL must be sqlite:///<path> (or sqlite:///:memory:)"),
        ("session_ttl", lambda v: str(v).isdigit() and int(v) > 0, "SESSION_TTL must be a positive integer"),
        ("cert_file", _readable, "WECHAT_CERT_FILE must be a readable PEM file"),
        ("key_file", _readable, "WECHAT_KEY_FILE must be a readable PEM file"),
        ("ca_file", _readable, "WECHAT_CA_FILE must be a readable PEM file"),
        ("refund_notify_url", _notify_url_ok, "WECHAT_REFUND_NOTIFY_URL must be an http(s) URL without a query string"),
        ("admin_token", lambda v: len(v) >= 16 and v.isascii() and v.isprintable(),
         "ADMIN_TOKEN must be at least 16 printable ASCII characters"),
    ]
    problems = [msg for field, ok, msg in checks if raw.get(field) not in (None, "") and not ok(str(raw[field]))]
    if bool(raw.get("cert_file")) != bool(raw.get("key_file")):
        problems.append("WECHAT_CERT_FILE and WECHAT_KEY_FILE go together")
    return problems


def _readable(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _url_ok(value):
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _notify_url_ok(value):
    return _url_ok(value) and not urlsplit(value).query and len(value) <= 256


def _positive_number(value):
    try:
        return 0 < float(value) < 3600
    except ValueError:
        return False
