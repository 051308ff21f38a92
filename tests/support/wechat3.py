"""A small fake WeChat Pay API v3 for the backend's in-process tests, with the test keys of
vectors_v3.json. Its own wire code (the wechatpayv3 SDK's utils and cryptography's AESGCM),
never server/wxpay3.py, so a misread rule is not shared by both sides.

It verifies each request's Authorization with the merchant's public key, keeps orders and
refunds, answers like WeChat (signed with the WeChat Pay key, by PUB_KEY_ID_ or by a
platform certificate's serial, as its key_mode says), serves GET /v3/certificates encrypted
with the APIv3 key, plays code2Session and the phone (POST /fake/pay checks the RSA paySign
and sends the signed, encrypted notification), and takes faults for the next answers.
The real simulator (simulator/v3/api.py) is the end-to-end check; this is the unit one.
"""
import asyncio
import base64
import datetime
import json
import os
import re
import secrets
import time
import urllib.parse

import pytest
import tornado.httpclient
import tornado.web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from wechatpayv3.utils import load_private_key, load_public_key, rsa_sign

from tests.support import DEMO, HERE

VECTORS_V3_FILE = os.path.join(HERE, "data", "vectors_v3.json")
with open(VECTORS_V3_FILE, encoding="utf-8") as _f:
    VECTORS_V3 = json.load(_f)
KEYS = VECTORS_V3["keys"]
APIV3_KEY = VECTORS_V3["notify"][0]["apiv3_key"]
MERCHANT_SERIAL = KEYS["merchant_serial_no"]
PUB_KEY_ID = KEYS["wechatpay_public_key_id"]
MCHID, APPID = DEMO["mch_id"], DEMO["appid"]
WECHATPAY_KEY = load_private_key(KEYS["wechatpay_private_key"])
MERCHANT_PUBLIC_KEY = load_public_key(KEYS["merchant_public_key"])
SCHEMA = "WECHATPAY2-SHA256-RSA2048"
_AUTH = re.compile(r'(\w+)="([^"]*)"')
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def other_key():
    """A key WeChat never had (generated once per test session)."""
    global _OTHER
    if _OTHER is None:
        _OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _OTHER


_OTHER = None


def platform_certificate(key=WECHATPAY_KEY, serial=0x3A1C0DE5F00DBEEF0123456789ABCDEF01234567, days=30):
    """A platform certificate for the WeChat Pay key (self-issued: WeChat's are issued by its CA)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (fake)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))


def serial_of(certificate):
    return "%X" % certificate.serial_number


def signed_headers(body, key=WECHATPAY_KEY, serial=PUB_KEY_ID, timestamp=None, nonce=None, signature=None,
                   signature_type=SCHEMA):
    """Wechatpay-* headers for an answer or notification body (bytes)."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    if signature is None:
        signature = rsa_sign(key, "%s\n%s\n%s\n" % (timestamp, nonce, body.decode("utf-8")))
    headers = {"Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature,
               "Wechatpay-Serial": serial}
    if signature_type is not None:
        headers["Wechatpay-Signature-Type"] = signature_type
    return headers


def encrypt(plaintext, associated_data, apiv3_key=APIV3_KEY):
    """{algorithm, ciphertext, nonce, associated_data}: AES-256-GCM as WeChat seals resources."""
    nonce = secrets.token_hex(6)
    sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode("utf-8"), associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": associated_data, "nonce": nonce}


def notification(resource, event_type="TRANSACTION.SUCCESS", apiv3_key=APIV3_KEY, event_id=None, **signing):
    """(headers, body) of a notification carrying resource (a dict), signed as `signing` says."""
    original = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    body = json.dumps({
        "id": event_id or "EV-%s" % secrets.token_hex(8), "create_time": beijing(time.time()),
        "resource_type": "encrypt-resource", "event_type": event_type,
        "summary": "支付成功" if original == "transaction" else "退款状态变更",
        "resource": encrypt(json.dumps(resource, ensure_ascii=False), original, apiv3_key),
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return signed_headers(body, **signing), body


def beijing(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, _BEIJING).isoformat(timespec="seconds")


def transaction(out_trade_no, total, openid="o-fake-openid", state="SUCCESS", **overrides):
    """A transaction as v3 query answers and payment notifications carry it."""
    resource = {"appid": APPID, "mchid": MCHID, "out_trade_no": out_trade_no,
                "transaction_id": "42000009%020d" % abs(hash(out_trade_no) % 10 ** 20),
                "trade_type": "JSAPI", "trade_state": state, "trade_state_desc": state, "bank_type": "OTHERS",
                "attach": "", "success_time": "2026-12-02T10:34:56+08:00", "payer": {"openid": openid},
                "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"}}
    if state != "SUCCESS":
        for key in ("transaction_id", "success_time", "bank_type"):
            del resource[key]
    resource.update(overrides)
    return resource


def refund_resource(out_trade_no, out_refund_no, refund, total, status="SUCCESS", status_key="refund_status",
                    **overrides):
    resource = {"mchid": MCHID, "out_trade_no": out_trade_no, "transaction_id": "4200000000000000000000000001",
                "out_refund_no": out_refund_no, "refund_id": "50300000%012d" % (abs(hash(out_refund_no)) % 10 ** 12),
                status_key: status, "user_received_account": "支付用户零钱",
                "amount": {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund}}
    if status == "SUCCESS":
        resource["success_time"] = "2026-12-02T11:00:00+08:00"
    resource.update(overrides)
    return resource


class FakeWeChatV3:
    """The fake's state; `app()` serves it. key_mode: public-key, certificate or migration."""

    def __init__(self, key_mode="public-key"):
        self.key_mode = key_mode
        self.certificate = platform_certificate()
        self.orders, self.refunds = {}, {}
        self.requests = []        # (method, path, verdict)
        self.faults = []          # dicts, consumed in order by the paths they name
        self.notified = []        # (url, status) of each notification sent
        self.refund_status = "PROCESSING"

    # -- what tests call ------------------------------------------------------------
    def fault(self, path, kind, count=1, **options):
        """The next `count` answers on paths containing `path`: kind error (status, code,
        signed=True), bad_sign, unsigned, latency (seconds), stale, unknown_serial, untyped (no
        Wechatpay-Signature-Type), sm2 (another signature type)."""
        self.faults.append(dict(options, path=path, kind=kind, count=count))

    def serial(self):
        return PUB_KEY_ID if self.key_mode == "public-key" else serial_of(self.certificate)

    def calls(self, fragment):
        return [r for r in self.requests if fragment in r[1]]

    def app(self):
        return tornado.web.Application([(r"/.*", _Handler, {"fake": self})])

    # -- WeChat's behaviour ---------------------------------------------------------
    def authorize(self, method, uri, body, authorization):
        """Why the request's Authorization is wrong, or None (WeChat answers 401 SIGN_ERROR)."""
        scheme, _, params = authorization.partition(" ")
        fields = dict(_AUTH.findall(params))
        if scheme != SCHEMA or fields.get("mchid") != MCHID or fields.get("serial_no") != MERCHANT_SERIAL:
            return "scheme, mchid or serial_no"
        if abs(time.time() - int(fields.get("timestamp", "0"))) > 300:
            return "timestamp"
        message = "%s\n%s\n%s\n%s\n" % (method, uri, fields["timestamp"], fields.get("nonce_str", ""))
        try:
            MERCHANT_PUBLIC_KEY.verify(base64.b64decode(fields.get("signature", "")),
                                       message.encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "signature"
        return None

    def route(self, method, path, query, body):
        """(status, JSON or None) of a verified request."""
        data = json.loads(body) if body else {}
        m = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)(/close)?", path)
        if method == "POST" and path == "/v3/pay/transactions/jsapi":
            return self.create(data)
        if m and method == "GET" and not m.group(2):
            order = self.orders.get(m.group(1))
            if order is None or query.get("mchid") != MCHID:
                return 404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
            return 200, self.trade(order)
        if m and method == "POST" and m.group(2):
            order = self.orders.get(m.group(1))
            if order is None:
                return 404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
            if order["state"] == "SUCCESS":
                return 400, {"code": "ORDERPAID", "message": "订单已支付"}
            order["state"] = "CLOSED"
            return 204, None
        if method == "POST" and path == "/v3/refund/domestic/refunds":
            return self.refund(data)
        m = re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)", path)
        if m and method == "GET":
            refund = self.refunds.get(m.group(1))
            if refund is None:
                return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
            return 200, refund
        if method == "GET" and path == "/v3/certificates":
            pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
            return 200, {"data": [{"serial_no": serial_of(self.certificate), "effective_time": beijing(time.time()),
                                   "expire_time": beijing(time.time() + 86400 * 30),
                                   "encrypt_certificate": encrypt(pem, "certificate")}]}
        return 404, {"code": "NOT_FOUND", "message": "no such path"}

    def create(self, data):
        no = data["out_trade_no"]
        order = self.orders.get(no)
        if order is not None:
            if order["state"] == "SUCCESS":
                return 400, {"code": "ORDERPAID", "message": "订单已支付"}
            if order["request"] != data:
                return 400, {"code": "INVALID_REQUEST", "message": "商户订单号重复"}
            return 200, {"prepay_id": order["prepay_id"]}
        if data.get("mchid") != MCHID or data.get("appid") != APPID:
            return 400, {"code": "APPID_MCHID_NOT_MATCH", "message": "appid和mch_id不匹配"}
        prepay_id = "wx%s" % secrets.token_hex(15)
        self.orders[no] = {"request": data, "prepay_id": prepay_id, "state": "NOTPAY", "transaction_id": None}
        return 200, {"prepay_id": prepay_id}

    def trade(self, order):
        request = order["request"]
        resource = transaction(request["out_trade_no"], request["amount"]["total"], request["payer"]["openid"],
                               order["state"])
        if order["transaction_id"]:
            resource["transaction_id"] = order["transaction_id"]
        return resource

    def refund(self, data):
        order = self.orders.get(data.get("out_trade_no"))
        if order is None or order["state"] not in ("SUCCESS", "REFUND"):
            return 400, {"code": "INVALID_REQUEST", "message": "订单未支付"}
        if data["amount"]["total"] != order["request"]["amount"]["total"]:
            return 400, {"code": "PARAM_ERROR", "message": "订单金额不符"}
        no = data["out_refund_no"]
        if no not in self.refunds:
            self.refunds[no] = refund_resource(data["out_trade_no"], no, data["amount"]["refund"],
                                               data["amount"]["total"], self.refund_status, "status",
                                               notify_url=data.get("notify_url"))
        return 200, self.refunds[no]

    def pay(self, params):
        """The phone: checks the RSA paySign like wx.requestPayment, marks paid."""
        order = next((o for o in self.orders.values() if "prepay_id=" + o["prepay_id"] == params.get("package")), None)
        message = "%s\n%s\n%s\n%s\n" % (APPID, params.get("timeStamp"), params.get("nonceStr"), params.get("package"))
        try:
            MERCHANT_PUBLIC_KEY.verify(base64.b64decode(params.get("paySign", "")), message.encode(),
                                       padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return 400, {"errMsg": "requestPayment:fail paySign"}
        if params.get("signType") != "RSA" or order is None or order["state"] != "NOTPAY":
            return 400, {"errMsg": "requestPayment:fail"}
        order["state"] = "SUCCESS"
        order["transaction_id"] = "4200001%021d" % secrets.randbelow(10 ** 21)
        return 200, {"errMsg": "requestPayment:ok", "transaction_id": order["transaction_id"],
                     "out_trade_no": order["request"]["out_trade_no"]}

    async def send(self, url, headers, body):
        """POST a notification; the receiver's status (599 when unreachable)."""
        client = tornado.httpclient.AsyncHTTPClient()
        response = await client.fetch(url, method="POST", body=body, raise_error=False,
                                      headers=dict(headers, **{"Content-Type": "application/json"}))
        self.notified.append((url, response.code))
        return response.code

    async def notify_paid(self, out_trade_no, **signing):
        order = self.orders[out_trade_no]
        headers, body = notification(self.trade(order), **dict({"serial": self.serial()}, **signing))
        return await self.send(order["request"]["notify_url"], headers, body)

    async def notify_refund(self, out_refund_no, status="SUCCESS", **signing):
        refund = self.refunds[out_refund_no]
        refund.update(status=status)
        resource = refund_resource(refund["out_trade_no"], out_refund_no, refund["amount"]["refund"],
                                   refund["amount"]["total"], status, refund_id=refund["refund_id"])
        headers, body = notification(resource, "REFUND." + status, **dict({"serial": self.serial()}, **signing))
        return await self.send(refund["notify_url"], headers, body)

    def take_fault(self, path):
        for fault in self.faults:
            if fault["path"] in path and fault["count"] > 0:
                fault["count"] -= 1
                return fault
        return None


class _Handler(tornado.web.RequestHandler):
    def initialize(self, fake):
        self.fake = fake

    async def handle(self):
        fake, request = self.fake, self.request
        if request.path == "/sns/jscode2session":
            code = self.get_query_argument("js_code")
            return self.finish({"openid": "o-" + code, "session_key": "k" * 24})
        if request.path == "/fake/pay":
            status, answer = fake.pay(json.loads(request.body))
            if status == 200:
                no = answer["out_trade_no"]
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(fake.notify_paid(no)))
            self.set_status(status)
            return self.finish(answer)
        why = fake.authorize(request.method, request.uri, request.body, request.headers.get("Authorization", ""))
        fake.requests.append((request.method, request.path, why or "ok"))
        if why:
            return self.answer(401, {"code": "SIGN_ERROR", "message": "签名错误"}, signed=False)
        fault = fake.take_fault(request.path)
        if fault and fault["kind"] == "latency":
            await asyncio.sleep(fault["seconds"])
        if fault and fault["kind"] == "error":
            return self.answer(fault["status"], {"code": fault["code"], "message": "fake fault"},
                               signed=fault.get("signed", True))
        query = {k: v[0].decode() for k, v in request.query_arguments.items()}
        status, answer = fake.route(request.method, urllib.parse.unquote(request.path), query, request.body)
        self.answer(status, answer, fault=fault and fault["kind"])

    get = post = handle

    def answer(self, status, data, signed=True, fault=None):
        body = b"" if data is None else json.dumps(data, ensure_ascii=False).encode("utf-8")
        self.set_status(status)
        if signed and fault != "unsigned":
            options = {"serial": self.fake.serial()}
            if fault == "bad_sign":
                options["key"] = other_key()
            elif fault == "stale":
                options["timestamp"] = int(time.time()) - 900
            elif fault == "unknown_serial":
                options["serial"] = "PUB_KEY_ID_0000000000000000000000000000UNKNOWN"
            elif fault == "untyped":          # no Wechatpay-Signature-Type (WeChat's documented example)
                options["signature_type"] = None
            elif fault == "sm2":
                options["signature_type"] = "WECHATPAY2-SM2-WITH-SM3"
            for name, value in signed_headers(body, **options).items():
                self.set_header(name, value)
        if data is not None:
            self.set_header("Content-Type", "application/json")
            self.write(body)
        self.finish()


# -- fixtures (import them into a test module: `from tests.support.wechat3 import ...`) ----------
@pytest.fixture
def key_mode():
    """Overridden by parametrising: the fake's (and the backend's) key mode."""
    return "public-key"


@pytest.fixture
def fake3(io_loop, key_mode):
    """The fake v3 WeChat on its own port in the test's IOLoop."""
    import tornado.testing
    from tornado.httpserver import HTTPServer
    fake = FakeWeChatV3(key_mode)
    sock, port = tornado.testing.bind_unused_port()
    server = HTTPServer(fake.app())
    server.add_sockets([sock])
    fake.url = "http://127.0.0.1:%d" % port
    yield fake
    server.stop()


def write_keys(directory):
    """The merchant's private key and the WeChat Pay public key as PEM files in directory."""
    paths = {}
    for name, pem in (("apiclient_key.pem", KEYS["merchant_private_key"]),
                      ("pub_key.pem", KEYS["wechatpay_public_key"])):
        paths[name] = str(directory / name)
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(pem)
    return paths


def v3_values(tmp_path, base_url, key_mode="public-key", backend_port=8000, **overrides):
    """Config.from_values() input for a v3 backend talking to base_url."""
    keys = write_keys(tmp_path)
    values = dict(
        appid=APPID, app_secret=DEMO["app_secret"], mch_id=MCHID, api_key="", timeout="3", session_ttl="7200",
        notify_url="http://127.0.0.1:%d/wechat/pay/v3/notify" % backend_port, login_base_url=base_url,
        pay_base_url=base_url, database_url="sqlite:///%s" % (tmp_path / "payments.db"), pay_version="v3",
        apiv3_key=APIV3_KEY, mch_private_key_file=keys["apiclient_key.pem"], mch_serial_no=MERCHANT_SERIAL,
        admin_token="test-admin-token-0123456789")
    if key_mode in ("public-key", "migration"):
        values.update(pay_public_key_file=keys["pub_key.pem"], pay_public_key_id=PUB_KEY_ID)
    if key_mode in ("certificate", "migration"):
        values.update(platform_cert_dir=str(tmp_path / "platform-certs"))
    values.update(overrides)
    return values


@pytest.fixture
def app3(fake3, io_loop, tmp_path, http_port, clock, key_mode, backend_store):
    """The backend in v3 mode (pytest-tornado serves it: alias it as `app` in the module)."""
    from server.app import make_app
    from server.config import Config
    config = Config.from_values(v3_values(tmp_path, fake3.url, key_mode, http_port))
    store = backend_store(str(tmp_path / "payments.db"), clock) if backend_store else None
    backend = make_app(config, store=store, clock=clock)
    io_loop.run_sync(backend.backend.start)
    yield backend
    io_loop.run_sync(lambda: backend.backend.stop(drain=0))
