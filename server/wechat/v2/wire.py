"""WeChat Pay v2 wire format: sign, verify (constant time), hardened XML in/out, nonces."""
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

MAX_XML_BYTES = 64 * 1024
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

# No entities, no DTD, no network: the 2018 XXE advisory hit WeChat Pay SDKs exactly here.
_PARSER = etree.XMLParser(
    resolve_entities=False, load_dtd=False, no_network=True, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True, recover=False)


class XMLError(ValueError):
    """The body is not a flat WeChat `<xml>` document we are willing to read."""


def string_to_sign(params):
    """stringA of protocol.md section 3: non-empty fields except sign, byte-order sorted."""
    items = sorted((k, v) for k, v in params.items() if k != "sign" and v not in (None, ""))
    return "&".join("%s=%s" % (k, v) for k, v in items)


def sign(params, key, sign_type=MD5):
    """Uppercase hex MD5 or HMAC-SHA256 of stringA + '&key=' + key."""
    payload = ("%s&key=%s" % (string_to_sign(params), key)).encode("utf-8")
    if sign_type == MD5:
        return hashlib.md5(payload).hexdigest().upper()
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest().upper()
    raise ValueError("unsupported sign_type %r" % (sign_type,))


def verify(params, key, sign_type=MD5):
    """True when params['sign'] is the signature of every other field, compared in constant time."""
    received = params.get("sign")
    if not isinstance(received, str) or not received:
        return False
    expected = sign(params, key, sign_type)
    return hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8", "replace"))


def nonce():
    """A random nonce_str: 32 hex characters (128 bits), within WeChat's limit of 32."""
    return secrets.token_hex(16)


def from_xml(body, max_bytes=MAX_XML_BYTES, root_tag="xml"):
    """Parse a flat `<xml>` document into a dict of str. Raises XMLError on anything else."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body or not body.strip():
        raise XMLError("empty body")
    if len(body) > max_bytes:
        raise XMLError("body larger than %d bytes" % max_bytes)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise XMLError("body is not UTF-8") from None
    if _DECLARATION.search(body):
        raise XMLError("DOCTYPE and entities are not allowed")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError("malformed XML: %s" % exc.msg) from None
    if root.getroottree().docinfo.doctype:
        raise XMLError("DOCTYPE and entities are not allowed")
    return _flat_children(root, root_tag)


def _flat_children(root, root_tag):
    if root.tag != root_tag:
        raise XMLError("root element must be <%s>" % root_tag)
    out = {}
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if len(child):
            raise XMLError("nested element <%s>" % child.tag)
        out[child.tag] = child.text or ""
    return out


def to_xml(params):
    """Serialise a flat dict (field names are ours, never input) as WeChat XML, values escaped."""
    fields = "".join("<%s>%s</%s>" % (key, _escape(str(value)), key)
                     for key, value in params.items() if value is not None)
    return ("<xml>%s</xml>" % fields).encode("utf-8")


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def signed_xml(params, key, sign_type=MD5):
    """params plus their sign, as XML bytes."""
    body = dict(params)
    body["sign"] = sign(body, key, sign_type)
    return to_xml(body)


def pay_sign_params(appid, prepay_id, key, sign_type, timestamp, nonce_str):
    """The five wx.requestPayment fields (appId signed but not returned) with paySign."""
    params = {"appId": appid, "timeStamp": str(timestamp), "nonceStr": nonce_str,
              "package": "prepay_id=%s" % prepay_id, "signType": sign_type}
    params["paySign"] = sign(params, key, sign_type)
    del params["appId"]
    return params


SUCCESS_REPLY = to_xml({"return_code": "SUCCESS", "return_msg": "OK"})


def fail_reply(message):
    """The merchant's FAIL answer to a notification."""
    return to_xml({"return_code": "FAIL", "return_msg": message})


def decrypt_req_info(req_info, api_key):
    """The refund notification's req_info: base64(AES-256-ECB(<root> XML, key = hex md5(API key)))."""
    key = hashlib.md5(api_key.encode("utf-8")).hexdigest().encode("ascii")
    try:
        data = base64.b64decode(req_info, validate=True)
        decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
    except (binascii.Error, ValueError) as exc:
        raise XMLError("req_info cannot be decrypted: %s" % type(exc).__name__) from None
    return from_xml(plain, root_tag="root")
