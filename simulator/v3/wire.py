"""WeChat Pay API v3 wire format as the simulator reads and writes it: the Authorization header,
SHA256withRSA signatures of requests, answers, notifications and paySign, AES-256-GCM
resources, RFC 3339 times. Pure: no I/O, no state.

Request (protocol.md 10): base64(SHA256withRSA, PKCS#1 v1.5) with the merchant's private key
over ``METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n`` (URL = the path with its query string, body
empty for GET), sent as ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
signature="..",timestamp="..",serial_no=".."``. Answers and notifications: the same kind of
signature with WeChat's key over ``timestamp\\nnonce\\nbody\\n``. paySign: over
``appId\\ntimeStamp\\nnonceStr\\npackage\\n``. A resource: AES-256-GCM with the APIv3 key (32
ASCII bytes), the nonce and associated_data as UTF-8 bytes, ciphertext = base64(ct || tag).
"""
import base64
import binascii
import datetime
import hashlib
import re
import secrets
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simulator import payurls

SCHEME = "WECHATPAY2-SHA256-RSA2048"
SIGNATURE_TYPE = SCHEME             # the Wechatpay-Signature-Type header
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
AES_ALGORITHM = "AEAD_AES_256_GCM"
AUTH_FIELDS = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
RSA_SIGNATURE_BYTES = 256           # a 2048-bit key signs 256 bytes
BEIJING = datetime.timezone(datetime.timedelta(hours=8))

_AUTH_PAIR = re.compile(r'\s*([A-Za-z_]+)="([^"]*)"\s*(?:,|$)')
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


class AuthorizationError(ValueError):
    """The Authorization header is absent or not WeChat's shape; str() says why."""


class DecryptError(ValueError):
    """A resource that does not decrypt under this key, nonce and associated data."""


# --- what is signed ---------------------------------------------------------------------
def request_message(method, url, timestamp, nonce, body=b""):
    """METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n as bytes (body: bytes or str)."""
    head = "%s\n%s\n%s\n%s\n" % (method, url, timestamp, nonce)
    return head.encode("utf-8") + _bytes(body) + b"\n"


def answer_message(timestamp, nonce, body=b""):
    """timestamp\\nnonce\\nbody\\n: what an answer's or a notification's signature covers."""
    return ("%s\n%s\n" % (timestamp, nonce)).encode("utf-8") + _bytes(body) + b"\n"


def paysign_message(appid, timestamp, nonce, package):
    """appId\\ntimeStamp\\nnonceStr\\npackage\\n (signType is not signed)."""
    return ("%s\n%s\n%s\n%s\n" % (appid, timestamp, nonce, package)).encode("utf-8")


def app_sign_message(appid, timestamp, noncestr, prepayid):
    """APP调起支付 (v3): appid\\ntimestamp\\nnoncestr\\nprepayid\\n, signed like paySign."""
    return ("%s\n%s\n%s\n%s\n" % (appid, timestamp, noncestr, prepayid)).encode("utf-8")


def _bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")


# --- RSA --------------------------------------------------------------------------------
def sign(private_key, message):
    """base64 of SHA256withRSA (PKCS#1 v1.5) over message (bytes)."""
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def decode_signature(signature):
    """The signature's bytes, or None when it is not strict base64."""
    if not isinstance(signature, str) or not signature:
        return None
    try:
        return base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def verify(public_key, message, signature):
    """True when signature (base64 text) is SHA256withRSA over message under public_key."""
    raw = decode_signature(signature)
    if raw is None:
        return False
    try:
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_of(key_or_cert):
    """The RSA public key of a private key, a public key or a certificate."""
    if isinstance(key_or_cert, x509.Certificate):
        return key_or_cert.public_key()
    if isinstance(key_or_cert, rsa.RSAPrivateKey):
        return key_or_cert.public_key()
    return key_or_cert


def public_pem(key):
    return public_key_of(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def serial_hex(cert):
    """A certificate's serial as WeChat writes it: uppercase hex, no 0x."""
    return "%X" % cert.serial_number


def same_serial(a, b):
    """Serials compared as WeChat's are: hex, case-insensitive."""
    return isinstance(a, str) and isinstance(b, str) and a.strip().upper() == b.strip().upper()


# --- the Authorization header -----------------------------------------------------------
def parse_authorization(header):
    """{mchid, nonce_str, signature, timestamp, serial_no} or AuthorizationError."""
    if not header:
        raise AuthorizationError("the request has no Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SCHEME:
        raise AuthorizationError("the Authorization scheme must be %s, not %r"
                                 % (SCHEME, scheme[:40]))
    fields, pos, rest = {}, 0, rest.strip()
    while pos < len(rest):
        match = _AUTH_PAIR.match(rest, pos)
        if not match:
            raise AuthorizationError('cannot read the Authorization header after %r: it must be '
                                     'key="value" pairs separated by commas' % rest[:pos][-40:])
        name, value = match.groups()
        if name in fields:
            raise AuthorizationError("%s appears twice in the Authorization header" % name)
        fields[name] = value
        pos = match.end()
    missing = [name for name in AUTH_FIELDS if not fields.get(name)]
    if missing:
        raise AuthorizationError("the Authorization header lacks %s" % ", ".join(missing))
    return {name: fields[name] for name in AUTH_FIELDS}


# --- AES-256-GCM ------------------------------------------------------------------------
def encrypt(apiv3_key, plaintext, associated_data, nonce_text=None):
    """A resource as WeChat sends it: {algorithm, ciphertext, associated_data, nonce}."""
    nonce_text = nonce_text or resource_nonce()
    data = AESGCM(apiv3_key.encode("utf-8")).encrypt(
        nonce_text.encode("utf-8"), _bytes(plaintext), associated_data.encode("utf-8"))
    return {"algorithm": AES_ALGORITHM, "ciphertext": base64.b64encode(data).decode("ascii"),
            "associated_data": associated_data, "nonce": nonce_text}


def decrypt(apiv3_key, nonce_text, ciphertext, associated_data=""):
    """The plaintext bytes of a resource, or DecryptError."""
    try:
        data = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("ciphertext is not base64") from None
    try:
        return AESGCM(apiv3_key.encode("utf-8")).decrypt(
            nonce_text.encode("utf-8"), data, (associated_data or "").encode("utf-8"))
    except (InvalidTag, ValueError):
        raise DecryptError("the tag does not verify: wrong APIv3 key, nonce or "
                           "associated_data") from None


# --- the links Native and H5 orders answer ----------------------------------------------
# Native下单 answers code_url, "weixin://wxpay/bizpayurl?pr=..." (the payer scans it as a QR
# code); the simulator's pr is the order's prepay_id, so a scan finds the order. H5下单 answers
# h5_url, "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=...&package=...",
# WeChat's own shape: the prepay_id and a number.
CODE_URL_PREFIX = "weixin://wxpay/bizpayurl?pr="
H5_URL_PREFIX = "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?"


def code_url(prepay_id):
    return CODE_URL_PREFIX + prepay_id


def h5_url(prepay_id):
    package = int.from_bytes(hashlib.sha256(prepay_id.encode("ascii")).digest()[:4], "big")
    return H5_URL_PREFIX + urllib.parse.urlencode({"prepay_id": prepay_id, "package": package})


def prepay_of_code_url(url):
    """The prepay_id a simulator code_url names; None when url is not one."""
    if isinstance(url, str) and url.startswith(CODE_URL_PREFIX):
        return url[len(CODE_URL_PREFIX):] or None
    return None


def prepay_of_h5_url(url):
    """The prepay_id an h5_url (or a v2 mweb_url, the same shape) names; None otherwise."""
    parts = payurls.split_url(url)
    if parts is None:
        return None
    values = urllib.parse.parse_qs(parts.query).get("prepay_id")
    return values[0] if values else None


# --- nonces and times -------------------------------------------------------------------
def nonce(length=32):
    """length random uppercase hex characters (a header or Authorization nonce)."""
    return secrets.token_hex((length + 1) // 2)[:length].upper()


def resource_nonce():
    """12 random letters and digits: the nonce of an encrypted resource (12 bytes for GCM)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


def rfc3339(ts):
    """2026-12-02T10:34:56+08:00: WeChat's times, in Beijing time."""
    return datetime.datetime.fromtimestamp(ts, BEIJING).isoformat(timespec="seconds")


def parse_rfc3339(text):
    """The POSIX time of an RFC 3339 string (a time zone is required); ValueError otherwise."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError("not an RFC 3339 time with a time zone: %r" % (text,))
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
