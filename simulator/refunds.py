"""Refund notifications (protocol.md 7): req_info encryption and the notification's fields.

req_info = base64(AES-256-ECB(plaintext, key)), where key is the lowercase hex MD5 of the
merchant's API key taken as 32 ASCII bytes, and the plaintext (a `<root>` document) is
padded with PKCS#7 on 16-byte blocks. Sandbox refunds use the sandbox sign key in place of
the API key, as wechatpy's parse_refund_notify_result does. The notification itself carries
no sign: the encryption is what authenticates it.
"""
import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from simulator import protocol

BLOCK_BITS = 128
# Notification modes of POST /sim/refunds/<out_refund_no>/notify.
REFUND_MODES = ("normal", "duplicate", "bad_key", "wrong_amount")
REFUND_FORGED = ("bad_key", "wrong_amount")
# The plaintext's fields, as in WeChat's notification (refund_recv_accout is WeChat's spelling).
ROOT_FIELDS = ("out_refund_no", "out_trade_no", "refund_account", "refund_fee", "refund_id",
               "refund_recv_accout", "refund_request_source", "refund_status",
               "settlement_refund_fee", "settlement_total_fee", "success_time", "total_fee",
               "transaction_id")


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
        return protocol.parse_xml(plaintext, root_tag="root")
    except protocol.XMLError as exc:
        raise DecryptError("plaintext is not a <root> document: %s" % exc.reason) from None


def root_xml(fields):
    """The plaintext as WeChat writes it: <root>, one CDATA field per line, sorted."""
    lines = ["<root>"]
    for name in sorted(fields):
        value = str(fields[name]).replace("]]>", "]]]]><![CDATA[>")
        lines.append("<%s><![CDATA[%s]]></%s>" % (name, value, name))
    lines.append("</root>")
    return "\n".join(lines).encode("utf-8")


def plaintext_fields(refund, mode="normal"):
    """What req_info holds for a settled refund."""
    fields = {
        "out_refund_no": refund.out_refund_no, "out_trade_no": refund.out_trade_no,
        "refund_account": refund.refund_account, "refund_fee": str(refund.refund_fee),
        "refund_id": refund.refund_id, "refund_recv_accout": refund.refund_recv_accout,
        "refund_request_source": "API", "refund_status": refund.refund_status,
        "settlement_refund_fee": str(refund.refund_fee),
        "settlement_total_fee": str(refund.total_fee), "total_fee": str(refund.total_fee),
        "transaction_id": refund.transaction_id,
    }
    if refund.success_time:
        fields["success_time"] = refund.success_time
    if mode == "wrong_amount":
        # After a key leak: correctly encrypted, but not this refund's amount.
        fields["refund_fee"] = fields["settlement_refund_fee"] = str(refund.refund_fee + 1)
    return fields


def notification_fields(refund, merchant, mode="normal"):
    """The refund notification: return_code, appid, mch_id, nonce_str, req_info; no sign."""
    key = merchant.key(refund.sandbox)
    if mode == "bad_key":   # encrypted, but not with this merchant's key
        key = protocol.nonce()
    req_info = encrypt_req_info(root_xml(plaintext_fields(refund, mode)), key)
    return {"return_code": "SUCCESS", "appid": refund.appid, "mch_id": refund.mch_id,
            "nonce_str": protocol.nonce(), "req_info": req_info}
