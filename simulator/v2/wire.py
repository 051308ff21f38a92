"""WeChat Pay v2 wire format as the simulator reads it: signatures, hardened XML, nonces, and
the encrypted req_info of refund notifications.

req_info (protocol.md 7) = base64(AES-256-ECB(plaintext, key)), where key is the lowercase hex
MD5 of the merchant's API key taken as 32 ASCII bytes, and the plaintext (a `<root>` document)
is padded with PKCS#7 on 16-byte blocks. Sandbox refunds use the sandbox sign key in place of
the API key, as wechatpy's parse_refund_notify_result does. The notification itself carries no
sign: the encryption is what authenticates it.
"""
import base64
import binascii
import hashlib
import hmac
import re
import secrets

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from lxml import etree

MD5 = "MD5"
HMAC_SHA256 = "HMAC-SHA256"
SIGN_TYPES = (MD5, HMAC_SHA256)
BLOCK_BITS = 128

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DIGITS = re.compile(r"^[0-9]+$")
# The integer fields WeChat writes bare (amounts in fen and counts); every other value, digits
# or not (nonce_str, transaction_id, time_end, ...), goes in CDATA, as in captured traffic.
BARE_FIELDS = re.compile(
    r"^(total_fee|cash_fee|coupon_fee(_[0-9]+)?|settlement_total_fee|coupon_count"
    r"|refund_fee(_[0-9]+)?|settlement_refund_fee(_[0-9]+)?|cash_refund_fee(_[0-9]+)?"
    r"|coupon_refund_fee(_[0-9]+)?|coupon_refund_count(_[0-9]+)?|refund_count"
    r"|total_refund_count)$")
NO_MATCH_HINT = ("no common mistake matched: check that the key is the merchant platform's "
                 "32-character API key (not the AppSecret) and that you signed exactly the "
                 "fields you sent, with their raw values")


class XMLError(ValueError):
    """The body is not a flat WeChat <xml> document; reason says why."""

    def __init__(self, reason, not_utf8=False):
        super().__init__(reason)
        self.reason = reason
        self.not_utf8 = not_utf8


def string_to_sign(params, key):
    """stringA&key=KEY (protocol.md 3): no `sign`, no empty values, byte-order sort."""
    pairs = ["%s=%s" % (k, v) for k, v in sorted(params.items(), key=_byte_order)
             if k != "sign" and v not in (None, "")]
    return "&".join(pairs + ["key=" + key])


def _byte_order(item):
    return item[0].encode("utf-8")


def sign(params, key, sign_type=MD5):
    """Uppercase hex MD5 or HMAC-SHA256 (keyed with the API key) of string_to_sign."""
    return _digest(string_to_sign(params, key), key, sign_type)


def _digest(text, key, sign_type):
    data = text.encode("utf-8")
    if sign_type == MD5:
        return hashlib.md5(data).hexdigest().upper()
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest().upper()
    raise ValueError("unknown sign_type %r" % sign_type)


def verify(params, key, sign_type=MD5):
    """True when params['sign'] is the signature of every other field (constant time)."""
    given = params.get("sign") or ""
    expected = sign(params, key, sign_type)
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def nonce(length=32):
    """length random hex characters (one urandom call, not one per character)."""
    return secrets.token_hex((length + 1) // 2)[:length]


def _parser():
    # The 2018 XXE advisory: never expand entities, load DTDs or touch the network.
    # Built once: the simulator parses on the IOLoop thread only.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, dtd_validation=False, remove_comments=True,
                           remove_pis=True, encoding="utf-8")


_PARSER = _parser()


def parse_xml(body, root_tag="xml"):
    """bytes -> {name: text}; raises XMLError for anything WeChat would refuse.

    root_tag is "xml" for every message on the wire, "root" for the decrypted req_info of
    a refund notification.
    """
    if not body or not body.strip():
        raise XMLError("empty body")
    _check_utf8(body)
    if _DOCTYPE.search(body):
        raise XMLError("DOCTYPE or ENTITY declarations are not allowed")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError("not well-formed XML: %s" % exc) from None
    if root.getroottree().docinfo.doctype:
        raise XMLError("DOCTYPE is not allowed")
    if root.tag != root_tag:
        raise XMLError("root element must be <%s>, not <%s>" % (root_tag, root.tag))
    return _flat_fields(root)


def _check_utf8(body):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise XMLError("body is not UTF-8", not_utf8=True) from None
    # WeChat's servers store 3-byte UTF-8 only (utf8, not utf8mb4): emoji are refused.
    if any(ord(ch) > 0xFFFF for ch in text):
        raise XMLError("4-byte UTF-8 characters (emoji) are not accepted", not_utf8=True)


def _flat_fields(root):
    if (root.text or "").strip():
        raise XMLError("text directly inside <%s>" % root.tag)
    fields = {}
    for child in root:
        if not isinstance(child.tag, str):
            raise XMLError("entity references are not allowed")
        if len(child) or (child.tail or "").strip():
            raise XMLError("<%s> is not a flat text field" % child.tag)
        if child.tag in fields:
            raise XMLError("<%s> appears twice" % child.tag)
        fields[child.tag] = child.text or ""
    return fields


def to_xml(fields):
    """{name: value} -> UTF-8 bytes as WeChat writes it: the integer amount and count fields
    (BARE_FIELDS) bare, every other value in CDATA, digits or not, empty ones included
    (`<attach><![CDATA[]]></attach>`)."""
    parts = ["<xml>"]
    for name, value in fields.items():
        value = "" if value is None else str(value)
        parts.append("<%s>%s</%s>" % (name, _xml_value(name, value), name))
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")


def _xml_value(name, value):
    if BARE_FIELDS.match(name) and _DIGITS.match(value):
        return value
    return "<![CDATA[%s]]>" % value.replace("]]>", "]]]]><![CDATA[>")


def mask_key(text, key):
    """string_to_sign with the key replaced by stars of the same length."""
    return text.replace("key=" + key, "key=" + "*" * len(key)) if key else text


def explain_signature_failure(params, key, sign_type, alternatives=()):
    """Why params['sign'] did not verify: the masked string-to-sign and hints.

    alternatives: (label, key) pairs of keys a developer may have used by mistake,
    e.g. ("the AppSecret of wx...", secret) or ("the real API key", key).
    """
    given = params.get("sign") or ""
    text = string_to_sign(params, key)
    return {
        "sign_type": sign_type,
        "string_to_sign": mask_key(text, key),
        "expected_sign": sign(params, key, sign_type),
        "received_sign": given,
        "hints": _hints(params, key, sign_type, given, alternatives),
    }


def _hints(params, key, sign_type, given, alternatives):
    hints = _shape_hints(params, sign_type, given)
    for label, matches in _candidates(params, key, sign_type, alternatives):
        if hmac.compare_digest(matches.encode("utf-8"), given.upper().encode("utf-8")):
            hints.append("the sign matches when " + label)
    return hints or [NO_MATCH_HINT]


def _shape_hints(params, sign_type, given):
    hints = []
    empty = sorted(k for k, v in params.items() if k != "sign" and v == "")
    if empty:
        hints.append("empty values are not signed (%s): drop them or sign without them"
                     % ", ".join(empty))
    if sign_type == HMAC_SHA256 and len(given) == 32:
        hints.append("sign_type is HMAC-SHA256 but the sign has 32 characters (an MD5 sign)")
    if sign_type == MD5 and len(given) == 64:
        hints.append("the sign has 64 characters (HMAC-SHA256) but sign_type is %s"
                     % ("absent, so MD5" if "sign_type" not in params else "MD5"))
    if given and len(given) not in (32, 64):
        hints.append("the sign has %d characters; MD5 gives 32, HMAC-SHA256 64" % len(given))
    if given and given != given.upper():
        hints.append("the sign must be uppercase hex")
    if not given:
        hints.append("the request carries no sign")
    return hints


def _candidates(params, key, sign_type, alternatives):
    """(description, sign) for each common mistake the received sign might match."""
    other = HMAC_SHA256 if sign_type == MD5 else MD5
    unsigned_type = {k: v for k, v in params.items() if k != "sign_type"}
    yield "signed with %s instead of %s" % (other, sign_type), sign(params, key, other)
    yield "empty values are signed too", _sign_with_empty(params, key, sign_type)
    yield "fields are sorted case-insensitively", _sign_casefold(params, key, sign_type)
    if "sign_type" in params:
        yield "sign_type is left out of the signed fields", sign(unsigned_type, key, sign_type)
    for label, alt_key in alternatives:
        if alt_key and alt_key != key:
            for st in (sign_type, other):
                yield "signed (%s) with %s" % (st, label), sign(params, alt_key, st)


def _sign_with_empty(params, key, sign_type):
    pairs = ["%s=%s" % (k, v) for k, v in sorted(params.items(), key=_byte_order)
             if k != "sign"]
    return _digest("&".join(pairs + ["key=" + key]), key, sign_type)


def _sign_casefold(params, key, sign_type):
    pairs = ["%s=%s" % (k, v) for k, v in sorted(params.items(), key=lambda i: i[0].lower())
             if k != "sign" and v != ""]
    return _digest("&".join(pairs + ["key=" + key]), key, sign_type)


# --- req_info of refund notifications ------------------------------------------------
class DecryptError(ValueError):
    """req_info is not base64 of AES-256-ECB ciphertext under this key, or not <root> XML."""


def aes_key(api_key):
    """The AES-256 key: lowercase hex md5(API key), used as 32 ASCII bytes."""
    return hashlib.md5(api_key.encode("utf-8")).hexdigest().encode("ascii")


def encrypt_req_info(plaintext, api_key):
    """bytes -> base64 text of AES-256-ECB(PKCS#7(plaintext))."""
    padder = padding.PKCS7(BLOCK_BITS).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key(api_key)), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt_req_info(req_info, api_key):
    """base64 text -> the plaintext bytes; DecryptError when it cannot be this key's."""
    try:
        data = base64.b64decode(req_info, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("req_info is not base64") from None
    if not data or len(data) % 16:
        raise DecryptError("req_info is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(aes_key(api_key)), modes.ECB()).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad PKCS#7 padding: wrong key?") from None


def decrypt_fields(req_info, api_key):
    """req_info -> the fields of its <root> document."""
    plaintext = decrypt_req_info(req_info, api_key)
    try:
        return parse_xml(plaintext, root_tag="root")
    except XMLError as exc:
        raise DecryptError("plaintext is not a <root> document: %s" % exc.reason) from None


def root_xml(fields):
    """The plaintext as WeChat writes it: <root>, one CDATA field per line, sorted."""
    lines = ["<root>"]
    for name in sorted(fields):
        value = str(fields[name]).replace("]]>", "]]]]><![CDATA[>")
        lines.append("<%s><![CDATA[%s]]></%s>" % (name, value, name))
    lines.append("</root>")
    return "\n".join(lines).encode("utf-8")
