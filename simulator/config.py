"""The simulator's configuration: its apps and merchants (SimConfig), the demo credentials
(demo.json, the one place they are written) and the refund delay's default."""
import dataclasses
import hashlib
import json
import os

DEMO_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.json")
# How long a refund stays PROCESSING before it settles, in WeChat seconds (scaled by the time
# scale like every other duration). Real refunds to the balance take minutes, to a bank card
# days; a few seconds lets a developer see PROCESSING and then the notification.
REFUND_DELAY = 5.0


def load_demo(path=DEMO_FILE):
    """The demo app and merchant of contract.md: {"appid", "app_secret", "mch_id", "api_key"},
    and for API v3 the merchant's "apiv3_key" and the "wechatpay_public_key_id"."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


DEMO = load_demo()
DEMO_APPID = DEMO["appid"]
DEMO_SECRET = DEMO["app_secret"]
DEMO_MCH_ID = DEMO["mch_id"]
DEMO_API_KEY = DEMO["api_key"]
DEMO_APIV3_KEY = DEMO["apiv3_key"]                          # API v3: AES-256-GCM only
DEMO_PUBLIC_KEY_ID = DEMO["wechatpay_public_key_id"]        # API v3: the WeChat Pay public key's id


class ConfigError(Exception):
    """A bad simulator configuration; str() is one line naming the problem."""


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


def check_refund_delay(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9
    if not ok:
        raise ValueError("refund_delay must be a number of seconds >= 0, not %r" % (value,))
    return float(value)
