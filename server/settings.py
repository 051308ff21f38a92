"""THE table of settings: variable, field, default, check, meaning; docs/configuration.md's table and --help come from it."""
import dataclasses
import os
import re
import sys
from urllib.parse import urlsplit

from server import descriptors, domain, numbers
from server.wechat.v2 import wire as v2_wire
from server.wechat.v3 import wire as v3_wire

SHOP, V3, PROCESS = "shop", "v3", "process"   # Config (both versions), Config (v3 only), ServerOptions
V2_VERSION, V3_VERSION = domain.PAY_V2, domain.PAY_V3
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")   # server/logs.py's TEXT and JSON
EVENT_LOOPS = ("asyncio", "uvloop")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting. `default` None: none (`required` names the pay versions that need one).
    `check(text)` true (or a ValueError) decides; `problem` says why not, after the variable
    (a function of nothing when it depends on the machine). `convert` makes the field's value.
    `secret`: masked and kept out of repr ("url": a URL that may hold a password). `shown`: the
    documented default, when the value is not what a reader needs. `flag`: run_server.py's flag
    that overrides it, `flag_help` its help when the meaning does not read as one."""
    variable: str
    field: str
    group: str
    meaning: str
    default: object = ""
    check: object = None
    problem: object = ""
    convert: object = str
    required: tuple = ()
    secret: object = False
    shown: str = None
    flag: str = None
    flag_help: str = None
    choices: tuple = None
    applies: object = None   # raw values -> whether the check applies (None: always)

    def reason(self, text):
        """Why `text` is not a value of this setting (after the variable's name), or None."""
        if self.group == SHOP and text != text.strip():
            return "has leading or trailing whitespace"
        try:
            if self.check is None or self.check(text):
                return None
        except ValueError:
            pass
        why = self.problem() if callable(self.problem) else self.problem
        return why + (" (got %r)" % text[:32] if self.group == PROCESS else "")   # process values hold no secret

    def is_switch(self):
        """On ("1") or off: no check, a bool made."""
        return self.check is None and self.convert is not str

    def default_shown(self):
        if self.shown is not None:
            return self.shown
        if self.required:
            return "required" + ("" if len(self.required) == 2 else " in %s" % self.required[0])
        return "`%s`" % self.default if self.default else "none"


def key32(text):
    return re.fullmatch(r"[0-9A-Za-z]{32}", text)


def url_ok(value):
    try:
        parts = urlsplit(value)
        port = parts.port   # raises ValueError for a port that is not 0 to 65535
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0
            and not any(c.isspace() for c in value))


def notify_url_ok(value):
    return url_ok(value) and not urlsplit(value).query and len(value) <= 256


def database_url_ok(value):
    if value.startswith("sqlite:///"):
        return len(value) > len("sqlite:///")
    if not value.startswith(("postgresql://", "postgres://")):
        return False
    parts = urlsplit(value)
    parts.port   # noqa: B018  (raises ValueError on a bad port)
    # an "@" after the host part means a password with an unescaped "/", "?" or "#": its tail
    # would be read as the database name (and shown); percent-encode it instead
    if "@" in parts.path + parts.query + parts.fragment:
        return False
    return bool(parts.path.strip("/")) and not parts.fragment and " " not in value


def proxy_ok(value):
    parts = urlsplit(value)
    parts.port   # noqa: B018  (raises ValueError on a bad port)
    return parts.scheme == "http" and bool(parts.hostname) and not parts.path.strip("/") and not parts.query


def readable(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def whole(minimum, maximum):
    return lambda text: numbers.parse_whole(text, minimum, maximum) is not None


def seconds(low, high, below=False):
    """A check: a number of seconds from low to high (or below it)."""
    return lambda text: low <= float(text) < high if below else low <= float(text) <= high


def listen_address(text):
    """(host, port) of `host:port` (`[v6 address]:port`); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets")
    if not sep or not host or any(c.isspace() for c in host):
        raise ValueError("host:port")
    return host, numbers.parse_whole(port, 1, 65535)


def listen_ok(text):
    return text == "" or listen_address(text) is not None


def directory_ok(path):
    """A writable directory, or one that can be made in a writable one."""
    if os.path.isdir(path):
        return os.access(path, os.W_OK | os.X_OK)
    parent = os.path.dirname(os.path.abspath(path))
    return not os.path.exists(path) and os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def most_connections():
    limit = descriptors.descriptor_limit()
    return (limit - 32) if limit else 10 ** 6


def is_v3(raw):
    return raw.get("pay_version") == V3_VERSION


def not_v3(raw):
    return not is_v3(raw)


URL_PROBLEM = "must be an http(s) URL (with a port of 1 to 65535 if any)"
NOTIFY_PROBLEM = "must be an http(s) URL without a query string"
TIMEOUT_PROBLEM = "must be a number of seconds from 0.1 to 3600"
SERVER_TIMEOUT = dict(group=PROCESS, check=seconds(0.1, 3600), problem=TIMEOUT_PROBLEM, convert=float)

SETTINGS = (
    Setting("WECHAT_APPID", "appid", SHOP, "the Mini Program's AppID", None, lambda v: re.fullmatch(
        r"wx[0-9a-zA-Z]{16}", v), "must look like wx + 16 characters", required=(V2_VERSION, V3_VERSION)),
    Setting("WECHAT_APP_SECRET", "app_secret", SHOP, "the Mini Program's AppSecret (32 letters and digits)", None,
            key32, "must be 32 letters and digits", required=(V2_VERSION, V3_VERSION), secret=True),
    Setting("WECHAT_MCH_ID", "mch_id", SHOP, "the merchant number", None, lambda v: re.fullmatch(r"[0-9]{6,32}", v),
            "must be digits", required=(V2_VERSION, V3_VERSION)),
    Setting("WECHAT_API_KEY", "api_key", SHOP, "the merchant's v2 API key (32 letters and digits; not needed in v3)",
            None, key32, "must be 32 letters and digits (the merchant API key, not the AppSecret)",
            required=(V2_VERSION,), secret=True),
    Setting("WECHAT_NOTIFY_URL", "notify_url", SHOP, "public URL of this server's `/wechat/pay/notify` (v3: of "
            "`/wechat/pay/v3/notify`; no query string)", None, notify_url_ok, NOTIFY_PROBLEM,
            required=(V2_VERSION, V3_VERSION), flag="--notify-url"),
    Setting("WECHAT_SIGN_TYPE", "sign_type", SHOP, "`MD5` or `HMAC-SHA256` (v2; v3 signs with RSA)", v2_wire.MD5,
            lambda v: v in v2_wire.SIGN_TYPES, "must be MD5 or HMAC-SHA256", applies=not_v3, flag="--sign-type",
            choices=v2_wire.SIGN_TYPES),
    Setting("WECHAT_PAY_VERSION", "pay_version", SHOP, "`v2` or `v3`: which WeChat Pay API the backend speaks; see "
            "[WeChat Pay v3](wechat-pay-v3.md)", V2_VERSION, lambda v: v in (V2_VERSION, V3_VERSION),
            "must be v2 or v3", flag="--pay-version", choices=(V2_VERSION, V3_VERSION)),
    Setting("WECHAT_APIV3_KEY", "apiv3_key", V3, "v3: the APIv3 key (32 ASCII characters, set in the merchant "
            "platform; decrypts notifications and platform certificates)", "", re.compile(r"[!-~]{32}").fullmatch,
            "must be 32 ASCII characters without spaces (the APIv3 key set in the merchant platform for "
            "AES-256-GCM, not the v2 API key)", required=(V3_VERSION,), secret=True),
    Setting("WECHAT_MCH_PRIVATE_KEY_FILE", "mch_private_key_file", V3, "v3: the merchant API certificate's private "
            "key (`apiclient_key.pem`, RSA, unencrypted)", required=(V3_VERSION,)),
    Setting("WECHAT_MCH_SERIAL_NO", "mch_serial_no", V3, "v3: the serial number (hex) of the merchant API "
            "certificate", "", re.compile(r"[0-9A-Fa-f]{8,64}").fullmatch, "must be the hex serial number of the "
            "merchant API certificate (40 hex digits), not a PUB_KEY_ID_", required=(V3_VERSION,)),
    Setting("WECHAT_PAY_PUBLIC_KEY_FILE", "pay_public_key_file", V3, "v3, public-key mode: the WeChat Pay public "
            "key (PEM)", shown="one of the two modes in v3"),
    Setting("WECHAT_PAY_PUBLIC_KEY_ID", "pay_public_key_id", V3, "v3, public-key mode: the id of that key, "
            "`PUB_KEY_ID_...`", "", re.compile(re.escape(v3_wire.PUBLIC_KEY_ID_PREFIX) + r"[!-~]{1,100}").fullmatch,
            "must start with %s (the id shown with the WeChat Pay public key in the merchant platform)"
            % v3_wire.PUBLIC_KEY_ID_PREFIX, shown="one of the two modes in v3"),
    Setting("WECHAT_PLATFORM_CERT_DIR", "platform_cert_dir", V3, "v3, platform-certificate mode: a directory where "
            "the backend keeps the certificates it fetches from `GET /v3/certificates` (created if missing)",
            shown="one of the two modes in v3"),
    Setting("WECHAT_LOGIN_BASE_URL", "login_base_url", SHOP, "code2Session host", "https://api.weixin.qq.com",
            url_ok, URL_PROBLEM),
    Setting("WECHAT_PAY_BASE_URL", "pay_base_url", SHOP, "pay host", "https://api.mch.weixin.qq.com", url_ok,
            URL_PROBLEM),
    Setting("WECHAT_TIMEOUT", "timeout", SHOP, "seconds allowed for one WeChat call", "10",
            seconds(0.1, 3600, below=True), TIMEOUT_PROBLEM, float),
    Setting("DATABASE_URL", "database_url", SHOP, "where orders live: `sqlite:///path` (one process) or "
            "`postgresql://user:password@host:port/database` (several processes and hosts; see [Deployment](deployment.md); "
            "the password never appears in logs or messages)", "sqlite:///payments.db", database_url_ok,
            "must be sqlite:///<path> (or sqlite:///:memory:) or postgresql://user[:password]@host[:port]/database "
            "(characters such as / ? # @ in the password percent-encoded)", secret="url", flag="--database-url"),
    Setting("DATABASE_POOL_SIZE", "database_pool_size", SHOP, "PostgreSQL: connections per process at most "
            "(requests beyond wait, up to `DATABASE_TIMEOUT`)", "10", whole(1, 1000),
            "must be a whole number of connections from 1 to 1000", int),
    Setting("DATABASE_TIMEOUT", "database_timeout", SHOP, "PostgreSQL: seconds a statement, a row lock or a wait "
            "for a pooled connection may take before the request fails with 503 `STORE_UNAVAILABLE` (also the "
            "connect timeout)", "5", seconds(0.1, 3600, below=True), TIMEOUT_PROBLEM, float),
    Setting("DATABASE_WAIT", "database_wait", SHOP, "PostgreSQL: seconds start-up (`--processes`, `--migrate` too) "
            "waits for a database that does not answer yet (refused, timed out, starting up), trying again every "
            "0.5 s doubling up to 5 s with a log line per attempt, before it exits with code 2; `0`: no waiting",
            "30", seconds(0, 3600), "must be a number of seconds from 0 (no waiting) to 3600", float),
    Setting("EVENT_LOOP", "event_loop", PROCESS, "`asyncio` or `uvloop` (see [Performance](performance.md#uvloop))", "asyncio",
            lambda v: v.strip().lower() in EVENT_LOOPS, "must be one of %s" % ", ".join(EVENT_LOOPS),
            lambda v: v.strip().lower(), flag="--event-loop", choices=EVENT_LOOPS),
    Setting("CATALOG_FILE", "catalog_file", SHOP, "products and prices, JSON `{\"products\": [{\"id\", \"name\", "
            "\"price\"}]}`", shown="a built-in demo catalog"),
    Setting("SESSION_TTL", "session_ttl", SHOP, "seconds a session token lives", "7200", whole(1, numbers.MAX_WHOLE),
            "must be a positive integer (seconds, at most %d digits)" % numbers.MAX_DIGITS, int),
    Setting("SPBILL_CREATE_IP", "spbill_create_ip", SHOP, "the server IP reported to unifiedorder", "127.0.0.1"),
    Setting("WECHAT_CERT_FILE", "cert_file", SHOP, "PEM client certificate for `/secapi/` (refunds): WeChat's "
            "`apiclient_cert.pem`; goes with `WECHAT_KEY_FILE`", "", readable, "must be a readable PEM file"),
    Setting("WECHAT_KEY_FILE", "key_file", SHOP, "the key of `WECHAT_CERT_FILE`: WeChat's `apiclient_key.pem`", "",
            readable, "must be a readable PEM file"),
    Setting("WECHAT_CA_FILE", "ca_file", SHOP, "an extra CA to trust for WeChat's hosts (the simulator's, with "
            "`--tls`)", "", readable, "must be a readable PEM file", shown="the system's"),
    Setting("WECHAT_REFUND_NOTIFY_URL", "refund_notify_url", SHOP, "public URL of `/wechat/refund/notify` (v3: "
            "`/wechat/refund/v3/notify`)", "", notify_url_ok, NOTIFY_PROBLEM, shown="derived from "
            "`WECHAT_NOTIFY_URL` when it ends in `/wechat/pay/notify` (v3: `/wechat/pay/v3/notify`)"),
    Setting("ADMIN_TOKEN", "admin_token", SHOP, "bearer token of the admin API (at least 16 characters)", "",
            lambda v: len(v) >= 16 and v.isascii() and v.isprintable(),
            "must be at least 16 printable ASCII characters", secret=True, shown="admin API off"),
    Setting("WECHAT_PROXY", "proxy_url", SHOP, "an egress proxy for every WeChat call: "
            "`http://[user:password@]host:port` (HTTPS targets through a CONNECT tunnel, HTTP ones in absolute "
            "form; credentials sent as Basic, never logged, masked in the configuration). Unset: the environment's "
            "`HTTPS_PROXY` / `HTTP_PROXY` (either case), if any. `NO_PROXY` names hosts reached directly in both "
            "cases", "", proxy_ok, "must be http://[user:password@]host:port", secret=True),   # may hold a password
    Setting("WECHAT_CONNECTIONS_PER_HOST", "connections_per_host", SHOP, "open connections to one WeChat host at "
            "most; calls beyond wait their turn within their own `WECHAT_TIMEOUT` (a flash sale does not open more "
            "sockets than the process can hold). `0`: a quarter of the descriptors left after 64 (the upstream "
            "half of them, shared by WeChat's two hosts; the other half is for clients, see `MAX_CONNECTIONS`), at "
            "least 8, at most 10000. Pooled connections idle for more than 30 s are closed the next time that host "
            "is called", "0", whole(0, 10000), "must be 0 (derived from the descriptor limit) or a whole number up "
            "to 10000", int),
    Setting("BILL_MAX_BYTES", "bill_max_bytes", SHOP, "the largest day's bill (交易账单) the backend downloads, "
            "compressed or not: a larger one fails the reconciliation rather than fill the memory", "67108864",
            whole(1024, 2 ** 40), "must be a whole number of bytes from 1024 to 2^40", int, shown="`67108864` (64 MiB)"),
    Setting("RECONCILE_DAILY", "reconcile_daily", SHOP, "`1`: reconcile yesterday's bill every day at "
            "`RECONCILE_AT` (see [Reconciliation](reconciliation.md)); `0`: only when asked (`run_server.py "
            "reconcile`, `POST /admin/reconciliations`). Rides on the sweep: with `SWEEP_INTERVAL=0` it does "
            "not run", "1", lambda v: v in ("0", "1"), "must be 1 (on) or 0 (off)", lambda v: v != "0"),
    Setting("RECONCILE_AT", "reconcile_at", SHOP, "Beijing time `HH:MM` of the daily reconciliation (WeChat makes "
            "a day's bill by 10:00 the next morning)", "10:00", lambda v: re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", v),
            "must be a Beijing time HH:MM, 00:00 to 23:59"),
    Setting("RECONCILE_RETRY", "reconcile_retry", SHOP, "seconds before the daily reconciliation tries again "
            "when the bill is not ready or WeChat fails", "1800", seconds(60, 86400),
            "must be a number of seconds from 60 to 86400", float),
    Setting("NOTIFICATION_LOG_DAYS", "notification_log_days", SHOP, "days a received notification stays in the "
            "notification log (`GET /admin/notifications`) before the sweep deletes it", "30", whole(1, 36500),
            "must be a whole number of days from 1 to 36500", int),
    Setting("NOTIFICATION_LOG_BODY_BYTES", "notification_log_body_bytes", SHOP, "bytes of a notification's body "
            "the notification log keeps (cut beyond; a cut one cannot be replayed)", "65536", whole(0, 1 << 20),
            "must be a whole number of bytes from 0 to 1048576", int),
    Setting("SWEEP_INTERVAL", "sweep_interval", PROCESS, "seconds between background sweeps that ask WeChat "
            "(`orderquery`, `refundquery`) about unpaid orders and open refunds whose notification has not come; "
            "each is asked a handful of times (after 1 minute, then ever less often, for up to 3 hours); `0` turns "
            "it off", "60", seconds(0, 86400), "must be a number of seconds from 0 (off) to 86400", float,
            flag="--sweep-interval"),
    Setting("LOG_LEVEL", "log_level", PROCESS, "logging level", "INFO", lambda v: v.strip().upper() in LOG_LEVELS,
            "must be one of %s" % ", ".join(LOG_LEVELS), lambda v: v.strip().upper(), flag="--log-level"),
    Setting("LOG_FORMAT", "log_format", PROCESS, "`text`: a line of time, level, logger and message; `json`: "
            "each line one JSON object with the request's `request_id` (`X-Request-Id`) and `out_trade_no` where "
            "known (see [Operations](operations.md#logs))", "text", lambda v: v.strip().lower() in LOG_FORMATS,
            "must be one of %s" % ", ".join(LOG_FORMATS), lambda v: v.strip().lower(), flag="--log-format",
            choices=LOG_FORMATS),
    Setting("ACCESS_LOG", "access_log", PROCESS, "`1`: log every request; otherwise only 4xx/5xx answers", "",
            convert=lambda v: v == "1", shown="off", flag="--access-log",
            flag_help="log every request (ACCESS_LOG=1); by default only 4xx/5xx answers are logged"),
    Setting("TRUST_PROXY_HEADERS", "xheaders", PROCESS, "`1`: take the client address from `X-Real-IP` / "
            "`X-Forwarded-For`; only behind a proxy you run", "", convert=lambda v: v == "1", shown="off",
            flag="--xheaders", flag_help="behind a reverse proxy: take the client address from X-Real-IP / "
            "X-Forwarded-For (TRUST_PROXY_HEADERS=1)"),
    Setting("METRICS_LISTEN", "metrics_listen", PROCESS, "`host:port` (`[::1]:9100` for IPv6) where `GET /metrics` "
            "is served without the admin token, and not on the API's port; unset: on the API's port behind "
            "`ADMIN_TOKEN` (see [Operations](operations.md#metrics))", "", listen_ok,
            "must be host:port with a port from 1 to 65535 (an IPv6 host in brackets)", shown="none"),
    Setting("METRICS_DIR", "metrics_dir", PROCESS, "`--processes N`: the directory where each process keeps its "
            "metrics so that one scrape adds them up (prometheus_client's multiprocess files, emptied of them at "
            "start; created if missing); unset: a new temporary directory, removed at stop", "",
            lambda v: v == "" or directory_ok(v), "must be a writable directory (or one that can be created)",
            shown="a temporary directory"),
    Setting("HEADER_TIMEOUT", "header_timeout", meaning="seconds a new connection has to send its first complete "
            "request line and headers", default="10", **SERVER_TIMEOUT),
    Setting("BODY_TIMEOUT", "body_timeout", meaning="seconds a request body has to arrive, once its headers have",
            default="30", **SERVER_TIMEOUT),
    Setting("IDLE_TIMEOUT", "idle_timeout", meaning="seconds a kept-alive connection may wait for (the end of) its "
            "next request's headers; keep it above the `keepalive_timeout` of an nginx `upstream` block (60 s by "
            "default)", default="75", **SERVER_TIMEOUT),
    Setting("SEND_TIMEOUT", "send_timeout", meaning="seconds a client may leave an answer unread (its socket full) "
            "before the connection is dropped", default="30", **SERVER_TIMEOUT),
    Setting("MAX_CONNECTIONS", "max_connections", PROCESS, "open client connections at most. A connection is "
            "*waiting* while it waits for a request head, sends its body, or leaves its answer unread, and "
            "*working* while the backend handles a complete request. At the cap the connection that has waited "
            "longest (at least 0.1 s, and not one whose next bytes have already arrived) is closed to make room; "
            "when all are working, accepting pauses and new clients wait in the listen backlog (1024) until one "
            "ends. `0`: half of the descriptors (`ulimit -n`) left after 64 for the database, listening sockets "
            "and logs, since each request may hold a connection to WeChat too; at most 10000. Explicit values must "
            "be below the descriptor limit less 32", "0", lambda v: numbers.parse_whole(v.strip(), 0,
                                                                                       most_connections()) is not None,
            lambda: "must be 0 (derived from the descriptor limit) or a whole number up to %d (the descriptor limit "
                    "%s less 32)" % (most_connections(), descriptors.descriptor_limit()),
            lambda v: numbers.parse_whole(v.strip())),
)
BY_FIELD = {setting.field: setting for setting in SETTINGS}


def of(*groups):
    return [setting for setting in SETTINGS if setting.group in groups]


def raw_values(groups, environ, overrides=None):
    """{field: text} of these groups from the environment (defaults where unset), overrides
    (flags) winning where not None."""
    raw = {s.field: environ.get(s.variable, s.default) for s in of(*groups)}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return raw


def problems(groups, raw):
    """{field: "VARIABLE <why>"} for every value of these groups that is set and refused. An
    empty shop value is one not given (a required one is named as missing); an empty process
    value is checked as any other (it has a default, so VAR= is a mistake to name)."""
    found = {}
    for setting in of(*groups):
        text = raw.get(setting.field)
        unset = text is None or (text == "" and setting.group != PROCESS)
        if unset or (setting.applies and not setting.applies(raw)):
            continue
        reason = setting.reason(str(text))
        if reason:
            found[setting.field] = "%s %s" % (setting.variable, reason)
    return found


def markdown():
    """The configuration table of docs/configuration.md (links relative to docs/)."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for s in SETTINGS:
        rows.append("| `%s` | %s%s | %s |" % (s.variable, s.meaning, "; flag `%s`" % s.flag if s.flag else "",
                                             s.default_shown()))
    return "\n".join(rows)


def plain(text):
    """Markdown made plain for --help: no backticks, links as their text."""
    return re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", text).replace("`", "")


def flag_help(setting):
    """The --help text of a setting's flag."""
    if setting.flag_help:
        return setting.flag_help
    default = "" if setting.required else " (default %s)" % plain(setting.default_shown())
    return ("%s. Overrides %s%s" % (plain(setting.meaning), setting.variable, default)).replace("%", "%%")


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m server.settings --markdown   (prints docs/configuration.md's table)")
    print(markdown())
