"""WeChat Pay API v3 wire format: RSA request, answer and paySign signatures, AES-256-GCM. Pure.

protocol.md section 10; every entry of vectors_v3.json is reproduced by this module
(tests/test_server_v3_wire.py). Nothing here does I/O or keeps state: the client
(server/wechat/v3/client.py, keys.py) loads keys, keeps the platform certificates and the replay cache.

- Request: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,signature=..,
  timestamp=..,serial_no=..`, signature = base64(SHA256withRSA, PKCS#1 v1.5) over
  `METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n` with the merchant's private key.
- Answer and notification: `Wechatpay-Timestamp/-Nonce/-Signature/-Serial/-Signature-Type`,
  the signature over `timestamp\\nnonce\\nbody\\n` with the key the serial names (a
  platform certificate's serial, or the WeChat Pay public key's `PUB_KEY_ID_...`).
- requestPayment: paySign over `appId\\ntimeStamp\\nnonceStr\\npackage\\n`, signType RSA.
- Notification resources and platform certificates: AEAD_AES_256_GCM with the APIv3 key,
  ciphertext = base64(encrypted || 16-byte tag).
"""
import base64
import binascii
import functools
import json
import re
import secrets
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = "WECHATPAY2-SHA256-RSA2048"      # Authorization scheme and Wechatpay-Signature-Type
RSA = "RSA"                                # requestPayment's signType under v3
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"       # WeChat's probes: must fail verification
PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"
AES_GCM = "AEAD_AES_256_GCM"
TIMESTAMP_WINDOW = 300                     # seconds either way, as WeChat allows for requests
MIN_KEY_BITS = 2048
MAX_NONCE = 64

SIGNED_HEADERS = ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial",
                  "wechatpay-signature-type")
_DIGITS = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[!-~]{1,%d}" % MAX_NONCE)
_SERIAL = re.compile(r"[!-~]{1,128}")


class SignatureError(ValueError):
    """An answer or notification whose signature is not to be believed. `reason` is one of
    missing, duplicate, probe, signature_type, timestamp, stale, unknown_serial, bad_signature."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class DecryptError(ValueError):
    """A resource or certificate that does not decrypt with the APIv3 key (or is malformed)."""


class KeyFileError(ValueError):
    """A key or certificate that cannot be used; the message says why (never its content)."""


# -- nonces, messages, signatures -------------------------------------------------------
def nonce():
    """A nonce_str: 32 upper-case hex characters (128 bits)."""
    return secrets.token_hex(16).upper()


def _bytes(body):
    if body is None:
        return b""
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def request_message(method, url, timestamp, nonce_str, body=b""):
    """`METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n` (URL: the path with its query string)."""
    head = "%s\n%s\n%s\n%s\n" % (method.upper(), url, timestamp, nonce_str)
    return head.encode("utf-8") + _bytes(body) + b"\n"


def answer_message(timestamp, nonce_str, body=b""):
    """`timestamp\\nnonce\\nbody\\n`: what an answer's or notification's signature covers."""
    return ("%s\n%s\n" % (timestamp, nonce_str)).encode("utf-8") + _bytes(body) + b"\n"


def pay_message(appid, timestamp, nonce_str, package):
    """`appId\\ntimeStamp\\nnonceStr\\npackage\\n` (signType is not signed)."""
    return ("%s\n%s\n%s\n%s\n" % (appid, timestamp, nonce_str, package)).encode("utf-8")


def sign(private_key, message):
    """base64(SHA256withRSA, PKCS#1 v1.5)."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify(public_key, message, signature):
    """True when signature (base64) is public_key's SHA256withRSA signature of message."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    try:
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def authorization(mchid, serial_no, private_key, method, url, body=b"", timestamp=None, nonce_str=None):
    """The Authorization header of a request (timestamp and nonce fresh unless given)."""
    timestamp = str(int(time.time())) if timestamp is None else str(timestamp)
    nonce_str = nonce() if nonce_str is None else nonce_str
    signature = sign(private_key, request_message(method, url, timestamp, nonce_str, body))
    return '%s mchid="%s",nonce_str="%s",signature="%s",timestamp="%s",serial_no="%s"' % (
        SCHEMA, mchid, nonce_str, signature, timestamp, serial_no)


def pay_sign_params(appid, prepay_id, private_key, timestamp, nonce_str):
    """wx.requestPayment's five fields under v3 (appId signed but not returned)."""
    package = "prepay_id=%s" % prepay_id
    return {"timeStamp": str(timestamp), "nonceStr": nonce_str, "package": package, "signType": RSA,
            "paySign": sign(private_key, pay_message(appid, str(timestamp), nonce_str, package))}


# -- verifying answers and notifications ------------------------------------------------
def signed_headers(pairs):
    """{lower-case name: value} of the Wechatpay-* headers among (name, value) pairs; a
    header given twice is refused (which copy would be the signed one?)."""
    found = {}
    for name, value in pairs:
        name = name.lower()
        if name in SIGNED_HEADERS:
            if name in found:
                raise SignatureError("duplicate", "%s given more than once" % name)
            found[name] = value.strip()
    return found


def check_signed(headers, body, key_for, now, window=TIMESTAMP_WINDOW, type_required=True):
    """Verify an answer or notification; returns the serial that signed it.

    headers: signed_headers() of it; key_for(serial) -> an RSA public key or None; now: Unix
    time. Raises SignatureError, checking in this order: the headers are there, it is not a
    probe, the signature type, the timestamp within `window` seconds of now, a known serial,
    and only then the RSA signature over timestamp\\nnonce\\nbody\\n.

    type_required=False (API answers): an absent Wechatpay-Signature-Type is taken as the only
    type there is, WECHATPAY2-SHA256-RSA2048 (WeChat's documented example answer has none, and
    wechatpay-go and wechatpay-php never read it); one that names another type is refused."""
    required = [name for name in SIGNED_HEADERS if type_required or name != "wechatpay-signature-type"]
    missing = [name for name in required if not headers.get(name)]
    if missing:
        raise SignatureError("missing", "no %s header" % missing[0])
    signature = headers["wechatpay-signature"]
    if signature.startswith(PROBE_PREFIX):
        raise SignatureError("probe", "a signature probe (%s...): refused" % PROBE_PREFIX)
    if headers.get("wechatpay-signature-type", SCHEMA) != SCHEMA:
        raise SignatureError("signature_type", "Wechatpay-Signature-Type is not %s" % SCHEMA)
    timestamp, nonce_str = headers["wechatpay-timestamp"], headers["wechatpay-nonce"]
    if not _DIGITS.fullmatch(timestamp) or not _NONCE.fullmatch(nonce_str):
        raise SignatureError("timestamp", "malformed Wechatpay-Timestamp or Wechatpay-Nonce")
    if abs(now - int(timestamp)) > window:
        raise SignatureError("stale", "Wechatpay-Timestamp is %d s away from now (at most %d)"
                             % (abs(now - int(timestamp)), window))
    serial = headers["wechatpay-serial"]
    key = key_for(serial) if _SERIAL.fullmatch(serial) else None
    if key is None:
        raise SignatureError("unknown_serial", "unknown Wechatpay-Serial %r" % serial[:64])
    if not verify(key, answer_message(timestamp, nonce_str, body), signature):
        raise SignatureError("bad_signature", "the signature does not verify with key %s" % serial[:64])
    return serial


# -- AES-256-GCM ------------------------------------------------------------------------
def decrypt(apiv3_key, nonce_str, ciphertext, associated_data=""):
    """The plaintext bytes of a resource: AES-256-GCM, key = the APIv3 key (32 bytes),
    ciphertext = base64(encrypted || tag). Raises DecryptError."""
    key = apiv3_key.encode("utf-8") if isinstance(apiv3_key, str) else apiv3_key
    if len(key) != 32:
        raise DecryptError("the APIv3 key is not 32 bytes")
    if not all(isinstance(v, str) for v in (nonce_str, ciphertext, associated_data or "")):
        raise DecryptError("nonce, ciphertext and associated_data must be strings")
    try:
        data = base64.b64decode(ciphertext, validate=True)
        return AESGCM(key).decrypt(nonce_str.encode("utf-8"), data, (associated_data or "").encode("utf-8"))
    except (binascii.Error, ValueError):
        raise DecryptError("ciphertext or nonce malformed") from None
    except InvalidTag:
        raise DecryptError("does not decrypt with the APIv3 key (tag mismatch)") from None


def decrypt_resource(resource, apiv3_key):
    """A notification's `resource` ({algorithm, ciphertext, nonce, associated_data}) as the
    JSON object it encrypts. Raises DecryptError."""
    if not isinstance(resource, dict):
        raise DecryptError("resource is not an object")
    if resource.get("algorithm") != AES_GCM:
        raise DecryptError("resource algorithm is not %s" % AES_GCM)
    plain = decrypt(apiv3_key, resource.get("nonce"), resource.get("ciphertext"), resource.get("associated_data") or "")
    try:
        data = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DecryptError("the decrypted resource is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise DecryptError("the decrypted resource is not a JSON object")
    return data


def decrypt_certificates(answer, apiv3_key):
    """The platform certificates of a GET /v3/certificates answer (parsed JSON): each
    encrypt_certificate decrypted with the APIv3 key and loaded; its serial_no must be the
    certificate's. Raises DecryptError or KeyFileError on any entry that is not right."""
    entries = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DecryptError("the certificates answer has no data")
    certificates = []
    for entry in entries:
        sealed = entry.get("encrypt_certificate") if isinstance(entry, dict) else None
        if not isinstance(sealed, dict) or sealed.get("algorithm") != AES_GCM:
            raise DecryptError("a certificate entry is not %s encrypted" % AES_GCM)
        pem = decrypt(apiv3_key, sealed.get("nonce"), sealed.get("ciphertext"), sealed.get("associated_data") or "")
        certificate = load_certificate(pem)
        if serial_number(entry.get("serial_no")) != certificate.serial_number:
            raise DecryptError("a certificate's serial_no does not match the certificate")
        certificates.append(certificate)
    return certificates


# -- keys and certificates ---------------------------------------------------------------
def load_private_key(pem):
    """The merchant's RSA private key (PEM, unencrypted, >= 2048 bits). Raises KeyFileError."""
    try:
        key = _parse_private_key(_bytes(pem))
    except TypeError:
        raise KeyFileError("is encrypted (give the unencrypted apiclient_key.pem)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("is not a PEM private key") from None
    return _rsa(key, rsa.RSAPrivateKey, "private key")


@functools.lru_cache(maxsize=8)
def _parse_private_key(data):
    # the same bytes are the same key: OpenSSL's RSA consistency check (tens of ms of CPU) runs
    # once per key, not at each load (a test, a reload, each process of a restart)
    return serialization.load_pem_private_key(data, password=None)


def load_public_key(pem):
    """An RSA public key (PEM `PUBLIC KEY` or `RSA PUBLIC KEY`). Raises KeyFileError."""
    try:
        key = serialization.load_pem_public_key(_bytes(pem))
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("is not a PEM public key") from None
    return _rsa(key, rsa.RSAPublicKey, "public key")


def load_certificate(pem):
    """An X.509 certificate (PEM) with an RSA key. Raises KeyFileError."""
    try:
        certificate = x509.load_pem_x509_certificate(_bytes(pem))
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("is not a PEM certificate") from None
    _rsa(key, rsa.RSAPublicKey, "certificate key")
    return certificate


def _rsa(key, kind, what):
    if not isinstance(key, kind):
        raise KeyFileError("is not an RSA %s (WeChat Pay v3 uses RSA)" % what)
    if key.key_size < MIN_KEY_BITS:
        raise KeyFileError("is a %d-bit RSA key (at least %d bits)" % (key.key_size, MIN_KEY_BITS))
    return key


def serial_number(text):
    """A certificate serial as WeChat writes it (hex) -> int; None if it is not hex."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]{1,64}", text):
        return None
    return int(text, 16)


def serial_hex(certificate):
    """A certificate's serial as WeChat writes it: upper-case hex."""
    return "%X" % certificate.serial_number
