"""Simulator state and WeChat's rules: apps, merchants, login codes, orders, refunds, faults,
clock."""
import base64
import collections
import dataclasses
import datetime
import hashlib
import json
import random
import re
import secrets
import time
import urllib.parse

from simulator import protocol

CODE_TTL = 300          # a wx.login code lives 5 minutes
PREPAY_TTL = 7200       # a prepay_id lives 2 hours
# WeChat's notify retry gaps after attempt 1, 2, ... (protocol.md 6): 16 attempts in 24h4m.
NOTIFY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600,
                   10800, 10800, 10800, 21600, 21600)
# How long a refund stays PROCESSING before it settles, in WeChat seconds (scaled by the time
# scale like every other duration). Real refunds to the balance take minutes, to a bank card
# days; a few seconds lets a developer see PROCESSING and then the notification.
REFUND_DELAY = 5.0
MAX_REFUNDS = 50        # partial refunds per order
REFUND_PAGE = 10        # refunds per refundquery answer (then offset)
REFUND_STATUSES = ("PROCESSING", "SUCCESS", "REFUNDCLOSE", "CHANGE")
REFUND_OUTCOMES = ("SUCCESS", "REFUNDCLOSE", "CHANGE")
REQUEST_LOG_SIZE = 1000
NOTIFICATION_LOG_SIZE = 5000
BEIJING = datetime.timezone(datetime.timedelta(hours=8))

DEMO_APPID = "wxd930ea5d5a258f4f"
DEMO_SECRET = "8a2f3c4d5e6f70819a0b1c2d3e4f5061"
DEMO_MCH_ID = "10000100"
DEMO_API_KEY = "192006250b4c09247ec02edce69f6a2d"

# WeChat's own texts (err_code_des as the real API words them).
DES = {
    "ORDERPAID": "该订单已支付",
    "ORDERCLOSED": "该订单已关闭",
    "ORDERNOTEXIST": "订单不存在",
    "APPID_NOT_EXIST": "appid不存在",
    "MCHID_NOT_EXIST": "mch_id不存在",
    "APPID_MCHID_NOT_MATCH": "appid和mch_id不匹配",
    "OUT_TRADE_NO_REPEAT": "201 商户订单号重复",
    "SYSTEMERROR": "系统超时",
    "NOTENOUGH": "余额不足",
    "NOAUTH": "商户无此接口权限",
    # Refunds: texts from real answers (SDK issues and captured traffic).
    "REFUND_FEE_MISMATCH": "订单金额或退款金额与之前请求不一致，请核实后再试",
    "FULLY_REFUNDED": "订单已全额退款",
    "REFUND_FEE_EXCEEDS": "refund_fee大于可退金额",
    "REFUND_COUNT": "退款次数超过限制，一笔订单最多退款50次",
    "OUT_REFUND_NO_USED": "out_refund_no已用于另一笔订单",
    "REFUNDNOTEXIST": "退款订单查询失败",
    "CERT_ERROR": "证书校验错误",
    "OFFSET": "offset超过total_refund_count",
}
INVALID_REFUND_FEE = "invalid refund_fee"
INVALID_TOTAL_FEE = "invalid total_fee"
TRADE_STATE_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "订单发生过退款，退款详情请查询退款单",
    "NOTPAY": "订单未支付",
    "CLOSED": "订单已关闭",
    "REVOKED": "已撤销（刷卡支付）",
    "USERPAYING": "用户支付中（需要输入密码）",
    "PAYERROR": "支付失败，请重新下单支付",
}
INVALID_NOTIFY_URL = "invalid notify_url"
FORMAT_DES = {
    "out_trade_no": "参数格式错误，最长32位，只能是数字、大小写字母_-|*",
    "total_fee": "参数格式错误，必须是正整数（单位：分）",
    "length": "参数长度有误，最长127字节",
    "format": "参数格式错误",
    "native": "为必填参数（trade_type=NATIVE）",
    "time": "参数格式错误，格式为yyyyMMddHHmmss",
}
TRADE_TYPES = ("JSAPI", "NATIVE", "APP", "MWEB")
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{1,32}$")
TOTAL_FEE = re.compile(r"^[1-9][0-9]{0,9}$")
TIME_14 = re.compile(r"^[0-9]{14}$")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")
# The fields that make an order "the same order" when out_trade_no is repeated.
BUSINESS_FIELDS = ("appid", "body", "detail", "attach", "total_fee", "fee_type", "trade_type",
                   "openid", "product_id", "goods_tag", "limit_pay", "time_expire",
                   "notify_url", "sign_type")


class ConfigError(Exception):
    """A bad simulator configuration; str() is one line naming the problem."""


class LoginError(Exception):
    """A code2Session/token failure: JSON {errcode, errmsg}."""

    def __init__(self, errcode, errmsg):
        super().__init__(errmsg)
        self.errcode, self.errmsg = errcode, errmsg


class PayError(Exception):
    """A business failure: return_code SUCCESS, result_code FAIL, signed."""

    def __init__(self, err_code, err_code_des=None):
        super().__init__(err_code)
        self.err_code = err_code
        self.err_code_des = err_code_des or DES.get(err_code, err_code)


class ProtocolFail(Exception):
    """A communication-level failure: return_code FAIL, return_msg, no sign."""

    def __init__(self, return_msg, detail=None):
        super().__init__(return_msg)
        self.return_msg = return_msg
        self.detail = detail or return_msg


@dataclasses.dataclass(frozen=True)
class App:
    appid: str
    secret: str


@dataclasses.dataclass(frozen=True)
class Merchant:
    mch_id: str
    api_key: str
    appids: tuple

    @property
    def sandbox_key(self):
        """Stable per merchant, like Tencent's: SDKs cache it across simulator resets."""
        seed = "sandbox:%s:%s" % (self.mch_id, self.api_key)
        return hashlib.md5(seed.encode("utf-8")).hexdigest()

    def key(self, sandbox):
        return self.sandbox_key if sandbox else self.api_key


@dataclasses.dataclass(frozen=True)
class SimConfig:
    apps: dict
    merchants: dict

    @classmethod
    def demo(cls):
        """The demo app and merchant of contract.md."""
        return cls.single(DEMO_APPID, DEMO_SECRET, DEMO_MCH_ID, DEMO_API_KEY)

    @classmethod
    def single(cls, appid, secret, mch_id, api_key):
        """One app bound to one merchant (run_simulator.py's credential flags)."""
        return cls.from_dict({"apps": [{"appid": appid, "secret": secret}],
                              "merchants": [{"mch_id": mch_id, "api_key": api_key,
                                             "appids": [appid]}]}, "flags")

    @classmethod
    def from_file(cls, path):
        """Read a JSON config file; raises ConfigError with a one-line message.

        Format::

            {"apps": [{"appid": "wx...", "secret": "<AppSecret>"}, ...],
             "merchants": [{"mch_id": "10000100", "api_key": "<32 characters>",
                            "appids": ["wx...", ...]}, ...]}

        Every appid is unique and non-empty; every mch_id is digits and unique; every
        api_key is exactly 32 printable ASCII characters; a merchant's appids are
        non-empty and each names an app of "apps". Unknown keys are refused (typos).
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ConfigError("%s: cannot read: %s" % (path, exc.strerror)) from None
        except UnicodeDecodeError:
            raise ConfigError("%s: not UTF-8 text" % path) from None
        except json.JSONDecodeError as exc:
            raise ConfigError("%s: not valid JSON: %s" % (path, exc)) from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data, source="config"):
        _expect(isinstance(data, dict), source, "top level must be a JSON object")
        _no_unknown(data, ("apps", "merchants"), source)
        apps = _parse_apps(data.get("apps"), source)
        merchants = _parse_merchants(data.get("merchants"), apps, source)
        return cls(apps=apps, merchants=merchants)

    def merchants_of(self, appid):
        return [m for m in self.merchants.values() if appid in m.appids]


def _expect(ok, source, message):
    if not ok:
        raise ConfigError("%s: %s" % (source, message))


def _no_unknown(obj, allowed, source, where=""):
    unknown = sorted(set(obj) - set(allowed))
    _expect(not unknown, source, "%sunknown field %r (allowed: %s)"
            % (where, unknown[0] if unknown else "", ", ".join(allowed)))


def _parse_apps(items, source):
    _expect(isinstance(items, list) and items, source, '"apps" must be a non-empty list')
    apps = {}
    for i, item in enumerate(items):
        where = "apps[%d]" % i
        _expect(isinstance(item, dict), source, where + " must be an object")
        _no_unknown(item, ("appid", "secret"), source, where + ": ")
        appid, secret = item.get("appid"), item.get("secret")
        _expect(_token(appid), source, where + ".appid must be a non-empty string without spaces")
        _expect(_token(secret), source,
                where + ".secret must be a non-empty string without spaces")
        _expect(appid not in apps, source, "%s.appid %s appears twice" % (where, appid))
        apps[appid] = App(appid, secret)
    return apps


def _parse_merchants(items, apps, source):
    _expect(isinstance(items, list) and items, source, '"merchants" must be a non-empty list')
    merchants = {}
    for i, item in enumerate(items):
        merchant = _parse_merchant(item, apps, source, "merchants[%d]" % i)
        _expect(merchant.mch_id not in merchants, source,
                "merchants[%d].mch_id %s appears twice" % (i, merchant.mch_id))
        merchants[merchant.mch_id] = merchant
    return merchants


def _parse_merchant(item, apps, source, where):
    _expect(isinstance(item, dict), source, where + " must be an object")
    _no_unknown(item, ("mch_id", "api_key", "appids"), source, where + ": ")
    mch_id = item.get("mch_id")
    mch_id = str(mch_id) if isinstance(mch_id, int) and not isinstance(mch_id, bool) else mch_id
    _expect(isinstance(mch_id, str) and mch_id.isdigit() and mch_id.isascii(), source,
            where + ".mch_id must be a string of digits")
    _check_api_key(item.get("api_key"), source, where + ".api_key")
    appids = item.get("appids")
    _expect(isinstance(appids, list) and appids, source,
            where + ".appids must be a non-empty list")
    for appid in appids:
        _expect(appid in apps, source,
                "%s.appids: %r is not an appid of \"apps\"" % (where, appid))
    return Merchant(mch_id, item["api_key"], tuple(appids))


def _check_api_key(key, source, where):
    _expect(isinstance(key, str), source, where + " must be a string")
    _expect(len(key) == 32, source, "%s must be 32 characters (got %d): it is the merchant "
            "platform's API key, not the AppSecret" % (where, len(key)))
    _expect(key.isascii() and key.isprintable() and " " not in key, source,
            where + " must be printable ASCII without spaces")


def _token(value):
    return isinstance(value, str) and value != "" and not any(c.isspace() for c in value)


class Clock:
    """Real time plus an offset (POST /sim/clock); WeChat durations are scaled."""

    def __init__(self, time_scale=1.0):
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.offset = 0.0

    def now(self):
        return time.time() + self.offset

    def advance(self, seconds):
        self.offset += seconds

    def scaled(self, seconds):
        return seconds * self.time_scale


def beijing(ts, fmt="%Y%m%d%H%M%S"):
    """WeChat writes times in Beijing time, yyyyMMddHHmmss."""
    return datetime.datetime.fromtimestamp(ts, BEIJING).strftime(fmt)


DEVELOPER_USER = "developer"   # whose openid unknown codes map to in developer mode


def openid_for(appid, user):
    """28 characters, 'o' + a per-app prefix + a per-user part, stable across resets."""
    app_part = _b64(hashlib.sha256(("app:" + appid).encode("utf-8")).digest())[:5]
    user_part = _b64(hashlib.sha256(("%s\0%s" % (appid, user)).encode("utf-8")).digest())[:22]
    return "o" + app_part + user_part


def _b64(data):
    return base64.urlsafe_b64encode(data).decode("ascii")


def _random_digits(n):
    return "%0*d" % (n, secrets.randbelow(10 ** n))


@dataclasses.dataclass
class LoginCode:
    code: str
    appid: str
    user: str
    openid: str
    expires_at: float
    used: bool = False


@dataclasses.dataclass
class Order:
    """One order of one merchant; refunds (issue 6) append to `refunds`."""
    mch_id: str
    out_trade_no: str
    appid: str
    sandbox: bool
    sign_type: str
    fields: dict                # the business fields of the unifiedorder call
    created_at: float
    prepay_id: str = ""
    prepay_expires_at: float = 0.0
    trade_state: str = "NOTPAY"
    transaction_id: str = ""
    time_end: str = ""
    bank_type: str = ""
    refunds: list = dataclasses.field(default_factory=list)
    notify_delivered: bool = False
    refund_outcome: str = ""    # how the next refund ends (control plane); "" = SUCCESS

    @property
    def total_fee(self):
        return int(self.fields["total_fee"])

    @property
    def notify_url(self):
        return self.fields["notify_url"]

    @property
    def openid(self):
        return self.fields.get("openid", "")

    @property
    def paid(self):
        return self.trade_state in ("SUCCESS", "REFUND")

    @property
    def refunded_fee(self):
        """What is refunded or being refunded: every refund that did not end REFUNDCLOSE."""
        return sum(r.refund_fee for r in self.refunds if r.refund_status != "REFUNDCLOSE")

    def to_json(self):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("fields", "refunds")}
        data.update({k: self.fields.get(k) for k in ("body", "attach", "trade_type",
                                                     "openid", "notify_url")})
        data["total_fee"] = self.total_fee
        data["refunded_fee"] = self.refunded_fee
        data["refunds"] = [r.to_json() for r in self.refunds]
        return data


@dataclasses.dataclass
class Refund:
    """One refund of a paid order: PROCESSING until due_at, then `outcome`."""
    mch_id: str
    appid: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    total_fee: int
    refund_fee: int
    sandbox: bool
    sign_type: str
    notify_url: str             # "" = no notification
    created_at: float
    due_at: float
    outcome: str = "SUCCESS"    # the status it settles to
    refund_status: str = "PROCESSING"
    success_time: str = ""      # yyyy-MM-dd HH:mm:ss Beijing, when SUCCESS
    settled_at: float = 0.0
    refund_desc: str = ""
    refund_account: str = "REFUND_SOURCE_UNSETTLED_FUNDS"
    refund_recv_accout: str = "支付用户的零钱"
    refund_channel: str = "ORIGINAL"
    fee_type: str = "CNY"
    notify_delivered: bool = False

    @property
    def key(self):
        return (self.mch_id, self.out_refund_no)

    def to_json(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Fault:
    id: str
    path: str
    kind: str
    value: object = None
    probability: float = 1.0
    count: object = None        # remaining firings; None = until deleted
    fired: int = 0


class State:
    """Everything the simulator remembers; reset() forgets it all."""

    def __init__(self, config, time_scale=1.0, refund_delay=REFUND_DELAY, accept_unknown_codes=False):
        self.config = config
        # developer mode (WeChat DevTools): a login code this simulator never issued (one
        # Tencent or DevTools made) is taken once, as the app's developer user
        self.accept_unknown_codes = accept_unknown_codes
        self.clock = Clock(time_scale)
        self.refund_delay = check_refund_delay(refund_delay)
        # connections accepted and WeChat calls served: what a client's connection reuse looks like
        self.stats = collections.Counter()
        self.reset()

    def reset(self):
        """Forget orders, codes, refunds, logs and faults (transport counters in `stats` stay)."""
        self.clock.offset = 0.0
        self.codes = {}
        self.openids = collections.defaultdict(dict)    # appid -> {openid: user}
        self.orders = {}                                # (mch_id, out_trade_no) -> Order
        self.by_prepay = {}
        self.by_transaction = {}
        self.refunds = {}                               # (mch_id, out_refund_no) -> Refund
        self.by_refund_id = {}
        self.notifications = collections.deque(maxlen=NOTIFICATION_LOG_SIZE)
        self.requests = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self.faults = []

    # --- login -------------------------------------------------------------------
    def issue_code(self, appid, user):
        """wx.login: a fresh single-use code; remembers the openid as issued for appid."""
        openid = openid_for(appid, user)
        self.openids[appid][openid] = user
        code = secrets.token_urlsafe(24)[:32]
        expires_at = self.clock.now() + self.clock.scaled(CODE_TTL)
        self.codes[code] = LoginCode(code, appid, user, openid, expires_at)
        return self.codes[code]

    def adopt_code(self, appid, js_code):
        """Developer mode: an unknown code becomes a code issued now to DEVELOPER_USER."""
        login = self.issue_code(appid, DEVELOPER_USER)
        del self.codes[login.code]
        login.code = js_code
        self.codes[js_code] = login
        return login

    def check_app(self, appid, secret):
        app = self.config.apps.get(appid)
        if app is None:
            raise LoginError(40013, "invalid appid")
        if not secrets.compare_digest(app.secret.encode("utf-8"), secret.encode("utf-8")):
            raise LoginError(40125, "invalid appsecret")
        return app

    def exchange_code(self, appid, js_code):
        """code2Session: openid and a fresh session_key, or LoginError."""
        login = self.codes.get(js_code)
        if login is None and self.accept_unknown_codes:
            login = self.adopt_code(appid, js_code)
        if login is None or login.appid != appid:
            raise LoginError(40029, "invalid code")
        if login.used:
            raise LoginError(40163, "code been used")
        if self.clock.now() >= login.expires_at:
            raise LoginError(40029, "invalid code")
        login.used = True
        session_key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        return {"session_key": session_key, "openid": login.openid}

    def openid_issued(self, appid, openid):
        return openid in self.openids.get(appid, {})

    # --- orders ------------------------------------------------------------------
    def unified_order(self, merchant, msg, sandbox):
        """Create or repeat an order (protocol.md 4); returns the Order or raises."""
        check_unifiedorder(msg)
        if msg["trade_type"] == "JSAPI" and not self.openid_issued(msg["appid"], msg["openid"]):
            raise PayError("PARAM_ERROR", "appid和openid不匹配")
        fields = {k: msg.get(k, "") for k in BUSINESS_FIELDS}
        fields["sign_type"] = msg.get("sign_type") or protocol.MD5
        order = self.orders.get((merchant.mch_id, msg["out_trade_no"]))
        if order is not None:
            return self._repeat(order, fields)
        order = Order(merchant.mch_id, msg["out_trade_no"], msg["appid"], sandbox,
                      fields["sign_type"], fields, self.clock.now())
        self.orders[(order.mch_id, order.out_trade_no)] = order
        self._new_prepay(order)
        return order

    def _repeat(self, order, fields):
        if order.paid:
            raise PayError("ORDERPAID")
        if order.trade_state == "CLOSED":
            raise PayError("ORDERCLOSED")
        if fields != order.fields:
            raise PayError("INVALID_REQUEST", DES["OUT_TRADE_NO_REPEAT"])
        if self.prepay_expired(order):
            self._new_prepay(order)
        return order

    def _new_prepay(self, order):
        now = self.clock.now()
        order.prepay_id = "wx" + beijing(now) + secrets.token_hex(10)
        order.prepay_expires_at = now + self.clock.scaled(PREPAY_TTL)
        self.by_prepay[order.prepay_id] = order

    def prepay_expired(self, order):
        return self.clock.now() >= order.prepay_expires_at

    def find_order(self, mch_id, out_trade_no="", transaction_id=""):
        """transaction_id wins over out_trade_no, as WeChat documents."""
        if transaction_id:
            order = self.by_transaction.get(transaction_id)
            return order if order is not None and order.mch_id == mch_id else None
        return self.orders.get((mch_id, out_trade_no))

    def close_order(self, order):
        if order.paid:
            raise PayError("ORDERPAID")
        if order.trade_state == "CLOSED":
            raise PayError("ORDERCLOSED")
        order.trade_state = "CLOSED"

    def mark_paid(self, order):
        order.trade_state = "SUCCESS"
        order.transaction_id = "4200" + _random_digits(6) + beijing(self.clock.now(), "%Y%m%d") \
            + _random_digits(10)
        order.time_end = beijing(self.clock.now())
        order.bank_type = "OTHERS"
        self.by_transaction[order.transaction_id] = order

    def orders_named(self, out_trade_no):
        return [o for (_, no), o in self.orders.items() if no == out_trade_no]

    # --- refunds -----------------------------------------------------------------
    def refund(self, merchant, msg, sandbox):
        """POST /secapi/pay/refund (protocol.md 7): (Refund, repeated) or raises.

        The same out_refund_no refunds once: repeated with the same amounts it answers the
        refund already accepted (whatever its status); with other amounts it fails.
        """
        total_fee, refund_fee = check_refund(msg)
        order = self.find_order(merchant.mch_id, msg.get("out_trade_no", ""),
                                msg.get("transaction_id", ""))
        if order is None or order.appid != msg["appid"] or not order.paid:
            raise PayError("ORDERNOTEXIST")
        existing = self.refunds.get((merchant.mch_id, msg["out_refund_no"]))
        if existing is not None:
            if existing.out_trade_no != order.out_trade_no:
                raise PayError("INVALID_REQUEST", DES["OUT_REFUND_NO_USED"])
            if (existing.total_fee, existing.refund_fee) != (total_fee, refund_fee):
                raise PayError("REFUND_FEE_MISMATCH")
            return existing, True
        if total_fee != order.total_fee:
            raise PayError("REFUND_FEE_MISMATCH")
        if len(order.refunds) >= MAX_REFUNDS:
            raise PayError("INVALID_REQUEST", DES["REFUND_COUNT"])
        left = order.total_fee - order.refunded_fee
        if left <= 0:
            raise PayError("ERROR", DES["FULLY_REFUNDED"])
        if refund_fee > left:
            raise PayError("INVALID_REQUEST", DES["REFUND_FEE_EXCEEDS"])
        return self._new_refund(order, msg, refund_fee, sandbox), False

    def _new_refund(self, order, msg, refund_fee, sandbox):
        now = self.clock.now()
        refund = Refund(
            mch_id=order.mch_id, appid=order.appid, out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id, out_refund_no=msg["out_refund_no"],
            refund_id=self._refund_id(now), total_fee=order.total_fee, refund_fee=refund_fee,
            sandbox=sandbox, sign_type=msg.get("sign_type") or protocol.MD5,
            notify_url=msg.get("notify_url", ""), created_at=now,
            due_at=now + self.clock.scaled(self.refund_delay),
            outcome=order.refund_outcome or "SUCCESS", refund_desc=msg.get("refund_desc", ""),
            refund_account=msg.get("refund_account") or "REFUND_SOURCE_UNSETTLED_FUNDS",
            fee_type=msg.get("refund_fee_type") or "CNY")
        order.refund_outcome = ""
        order.refunds.append(refund)
        order.trade_state = "REFUND"
        self.refunds[refund.key] = refund
        self.by_refund_id[refund.refund_id] = refund
        return refund

    def _refund_id(self, now):
        """29 digits like WeChat's: 50300 + 5 digits + yyyyMMdd + 11 digits."""
        while True:
            refund_id = "50300" + _random_digits(5) + beijing(now, "%Y%m%d") + _random_digits(11)
            if refund_id not in self.by_refund_id:
                return refund_id

    def query_refunds(self, mch_id, appid, msg):
        """refundquery: (order, refunds); refund_id > out_refund_no > transaction_id >
        out_trade_no, as WeChat documents. Raises REFUNDNOTEXIST when there is none."""
        if msg.get("refund_id") or msg.get("out_refund_no"):
            if msg.get("refund_id"):
                refund = self.by_refund_id.get(msg["refund_id"])
            else:
                refund = self.refunds.get((mch_id, msg["out_refund_no"]))
            ok = refund is not None and refund.mch_id == mch_id and refund.appid == appid
            if not ok:
                raise PayError("REFUNDNOTEXIST")
            return self.orders[(mch_id, refund.out_trade_no)], [refund]
        order = self.find_order(mch_id, msg.get("out_trade_no", ""),
                                msg.get("transaction_id", ""))
        if order is None or order.appid != appid or not order.refunds:
            raise PayError("REFUNDNOTEXIST")
        return order, list(order.refunds)

    def settle_refund(self, refund, status):
        """PROCESSING -> SUCCESS, REFUNDCLOSE or CHANGE."""
        if status not in REFUND_OUTCOMES:
            raise ValueError("a refund ends SUCCESS, REFUNDCLOSE or CHANGE, not %r" % status)
        now = self.clock.now()
        refund.refund_status = status
        refund.settled_at = now
        if status == "SUCCESS":
            refund.success_time = beijing(now, "%Y-%m-%d %H:%M:%S")
        return refund

    def due_refunds(self):
        now = self.clock.now()
        return [r for r in self.refunds.values()
                if r.refund_status == "PROCESSING" and now >= r.due_at]

    def pending_refunds(self):
        return [r for r in self.refunds.values() if r.refund_status == "PROCESSING"]

    def refunds_named(self, out_refund_no):
        return [r for (_, no), r in self.refunds.items() if no == out_refund_no]

    # --- faults ------------------------------------------------------------------
    def add_fault(self, path, kind, value=None, probability=1.0, count=None):
        fault = Fault(secrets.token_hex(6), path, kind, value, probability, count)
        self.faults.append(fault)
        return fault

    def fire_faults(self, path):
        """The faults that fire for one request to path, counted down."""
        fired = [f for f in self.faults
                 if f.path == path and random.random() < f.probability]
        for fault in fired:
            fault.fired += 1
            if fault.count is not None:
                fault.count -= 1
        self.faults = [f for f in self.faults if f.count is None or f.count > 0]
        return fired


def check_unifiedorder(msg):
    """Field formats of protocol.md 4; raises PayError / ProtocolFail."""
    problem = next(_field_problems(msg), None)
    if problem:
        raise PayError("INVALID_REQUEST", "%s%s" % problem)
    check_notify_url(msg["notify_url"])


def _field_problems(msg):
    if not OUT_TRADE_NO.match(msg["out_trade_no"]):
        yield "out_trade_no", FORMAT_DES["out_trade_no"]
    if not TOTAL_FEE.match(msg["total_fee"]):
        yield "total_fee", FORMAT_DES["total_fee"]
    for name in ("body", "attach"):
        if len(msg.get(name, "").encode("utf-8")) > 127:
            yield name, FORMAT_DES["length"]
    if msg["trade_type"] not in TRADE_TYPES:
        yield "trade_type", FORMAT_DES["format"]
    if msg["trade_type"] == "NATIVE" and not msg.get("product_id"):
        yield "product_id", FORMAT_DES["native"]
    if msg.get("fee_type", "CNY") not in ("CNY", ""):
        yield "fee_type", FORMAT_DES["format"]
    for name in ("time_start", "time_expire"):
        if msg.get(name) and not TIME_14.match(msg[name]):
            yield name, FORMAT_DES["time"]


def check_refund_delay(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9
    if not ok:
        raise ValueError("refund_delay must be a number of seconds >= 0, not %r" % (value,))
    return float(value)


def check_refund(msg):
    """Formats of a refund request; returns (total_fee, refund_fee) or raises.

    Real WeChat answers an impossible amount (refund_fee above total_fee, not a positive
    integer) at the communication level: return_code FAIL, return_msg "invalid refund_fee".
    """
    if not TOTAL_FEE.match(msg["total_fee"]):
        raise ProtocolFail(INVALID_TOTAL_FEE, "total_fee must be a positive integer (fen)")
    if not TOTAL_FEE.match(msg["refund_fee"]):
        raise ProtocolFail(INVALID_REFUND_FEE, "refund_fee must be a positive integer (fen)")
    total_fee, refund_fee = int(msg["total_fee"]), int(msg["refund_fee"])
    if refund_fee > total_fee:
        raise ProtocolFail(INVALID_REFUND_FEE, "refund_fee is above total_fee")
    if not OUT_REFUND_NO.match(msg["out_refund_no"]):
        raise PayError("PARAM_ERROR", "out_refund_no参数格式错误，最长64位，只能是数字、"
                       "大小写字母_-|*@")
    if msg.get("refund_fee_type", "CNY") not in ("CNY", ""):
        raise PayError("PARAM_ERROR", "refund_fee_type" + FORMAT_DES["format"])
    if msg.get("notify_url"):
        check_notify_url(msg["notify_url"])
    return total_fee, refund_fee


def check_notify_url(url):
    parts = urllib.parse.urlsplit(url)
    ok = (len(url) <= 256 and parts.scheme in ("http", "https") and parts.netloc
          and not parts.query and "?" not in url and not parts.fragment)
    if not ok:
        raise ProtocolFail(INVALID_NOTIFY_URL, "notify_url must be an http(s) URL of at most "
                           "256 characters without a query string: %r" % url)
