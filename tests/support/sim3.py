"""Helpers of the simulator's API v3 tests: throwaway merchant keys, requests signed and answers
verified with the wechatpayv3 SDK's own functions (not the simulator's), a v3 notify receiver
for in-process tests and one in a thread for process-level tests."""
import datetime
import json
import secrets
import time

import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from tornado.httpclient import HTTPRequest
from wechatpayv3.utils import aes_decrypt, build_authorization, rsa_sign, rsa_verify

from tests.support import DEMO
from tests.support.sim import NotifySink

APIV3_KEY = DEMO["apiv3_key"]
MCHID, APPID = DEMO["mch_id"], DEMO["appid"]


class MerchantKeys:
    """A throwaway merchant API certificate: 2048-bit key, self-signed, 40-hex serial."""

    def __init__(self, directory, mchid=MCHID):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mchid)])
        serial = secrets.randbits(156) | (1 << 156)       # 40 hex digits, like WeChat's
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(serial)
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .sign(self.key, hashes.SHA256()))
        self.serial = "%X" % serial
        self.key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")
        self.cert_file = str(directory / "merchant_cert.pem")
        self.key_file = str(directory / "merchant_key.pem")
        self.public_key_file = str(directory / "merchant_public_key.pem")
        with open(self.cert_file, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))
        with open(self.key_file, "w") as f:
            f.write(self.key_pem)
        with open(self.public_key_file, "wb") as f:
            f.write(self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def authorization(merchant, method, url, body="", mchid=MCHID, serial=None, timestamp=None,
                  nonce_str=None, key=None):
    """An Authorization header made by the SDK's build_authorization (its clock, unless
    timestamp is given: then the SDK's signer over our own string)."""
    if timestamp is None:
        return build_authorization(url, method, mchid, serial or merchant.serial,
                                   key or merchant.key, data=body, nonce_str=nonce_str)
    nonce_str = nonce_str or "N%031d" % time.time_ns()
    sign_str = "%s\n%s\n%s\n%s\n%s\n" % (method, url, timestamp, nonce_str, body)
    signature = rsa_sign(key or merchant.key, sign_str)
    return ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",signature="%s",'
            'timestamp="%s",serial_no="%s"' % (mchid, nonce_str, signature, timestamp,
                                                serial or merchant.serial))


async def v3_call(client, base, merchant, method, url, data=None, headers=None, **auth):
    """(status, headers, text) of one signed v3 call; data: a dict (sent as compact JSON)."""
    body = "" if data is None else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    all_headers = {"Accept": "application/json", "Content-Type": "application/json",
                   "Authorization": authorization(merchant, method, url, body, **auth)}
    all_headers.update(headers or {})
    resp = await client.fetch(HTTPRequest(base + url, method=method,
                                          body=body if method != "GET" else None,
                                          headers=all_headers), raise_error=False)
    return resp.code, resp.headers, (resp.body or b"").decode("utf-8")


def verify_answer(headers, text, public_key):
    """The SDK's rsa_verify over Wechatpay-Timestamp\\nNonce\\nbody\\n."""
    return rsa_verify(headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"], text,
                      headers["Wechatpay-Signature"], public_key)


def decrypt_notification(body, apiv3_key=APIV3_KEY):
    """The SDK's aes_decrypt of a notification's resource, parsed."""
    resource = json.loads(body)["resource"]
    plain = aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"],
                        apiv3_key)
    return None if plain is None else json.loads(plain)


class V3Receiver(tornado.web.RequestHandler):
    """A merchant's v3 notify_url in an in-process test: records (headers, body), answers
    box["status"] (204 by default)."""

    def initialize(self, box):
        self.box = box

    def post(self):
        self.box.setdefault("received", []).append((dict(self.request.headers),
                                                    self.request.body.decode("utf-8")))
        self.set_status(self.box.get("status", 204))
        if self.get_status() != 204:
            self.write(self.box.get("reply", ""))
        self.finish()


class V3Sink(NotifySink):
    """A v3 notify_url in a thread, for tests against a simulator process: records (headers,
    body as text) and answers 204."""

    def keep(self, headers, body):
        super().keep(headers, body.decode("utf-8"))

    def answer(self, handler):
        handler.send_response(204)
        handler.end_headers()

    def wait(self, predicate, timeout=10.0):
        """The first recorded (headers, body) for which predicate(headers, body) holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in list(self.received):
                if predicate(headers, body):
                    return headers, body
            time.sleep(0.02)
        raise AssertionError("no matching notification in %ss: %d received"
                             % (timeout, len(self.received)))
