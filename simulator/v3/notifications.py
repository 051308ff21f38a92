"""API v3 resources and notifications: the transaction and the refund as WeChat answers and
notifies them, the signed, AES-256-GCM encrypted notification (TRANSACTION.SUCCESS,
REFUND.SUCCESS / REFUND.CLOSED / REFUND.ABNORMAL), and the forgeries and probes a receiver must
refuse.

Modes of POST /sim/orders/<no>/notify and /sim/refunds/<no>/notify for v3:
normal, duplicate (several genuine copies at once), and, each of which a correct receiver
refuses: bad_sign (signed by a key that is not WeChat's), wrong_amount (genuine signature and
encryption, an amount one fen above the order's), signtest (WeChat's probe: a
Wechatpay-Signature starting with WECHATPAY/SIGNTEST/), stale_timestamp (genuinely signed,
Wechatpay-Timestamp STALE_SECONDS in the past) and wrong_serial (genuinely signed, but
Wechatpay-Serial names a key of the same kind the merchant was never given).
"""
import base64
import json
import secrets
import time

from cryptography.hazmat.primitives.asymmetric import rsa

from simulator.models import random_digits
from simulator.v3 import rules as v3rules, wire as v3wire

MODES = ("normal", "duplicate", "bad_sign", "wrong_amount", "signtest", "stale_timestamp",
         "wrong_serial")
FORGED = ("bad_sign", "wrong_amount", "signtest", "stale_timestamp", "wrong_serial")
STALE_SECONDS = 600         # stale_timestamp: ten minutes old, twice WeChat's window
_FORGER = []                # a key that is not WeChat's, made once when first needed


def transaction(order, mode="normal"):
    """The transaction of GET /v3/pay/transactions/... and of TRANSACTION.SUCCESS."""
    out = {"appid": order.appid, "mchid": order.mch_id, "out_trade_no": order.out_trade_no,
           "trade_type": order.fields.get("trade_type") or "JSAPI",
           "trade_state": order.trade_state,
           "trade_state_desc": v3rules.TRADE_STATE_DESC[order.trade_state],
           "attach": order.fields.get("attach", ""), "payer": {},
           "amount": {"total": order.total_fee, "currency": "CNY"}}
    paid = _payment_facts(order, forged=mode in FORGED)
    if paid:
        if not order.paid:      # a forgery claiming an unpaid order was paid
            out.update(trade_state="SUCCESS", trade_state_desc=v3rules.TRADE_STATE_DESC["SUCCESS"])
        out.update(transaction_id=paid["transaction_id"], bank_type=paid["bank_type"],
                   success_time=paid["success_time"], payer={"openid": order.openid})
        out["amount"].update(payer_total=order.cash_fee, payer_currency="CNY")
        if order.coupon_fee:
            out["promotion_detail"] = [{
                "coupon_id": order.coupon_id, "name": "simulator coupon", "scope": "GLOBAL",
                "type": "CASH" if order.coupon_type == "CASH" else "NOCASH",
                "amount": order.coupon_fee, "currency": "CNY"}]
    if mode == "wrong_amount":
        # After a key leak: correctly signed and encrypted, but not the order's amount.
        out["amount"]["total"] += 1
        out["amount"]["payer_total"] = out["amount"].get("payer_total", order.cash_fee) + 1
    return out


def _payment_facts(order, forged=False):
    """The payment, made up for a forgery about an unpaid order; None when unpaid."""
    if order.transaction_id:
        return {"transaction_id": order.transaction_id, "bank_type": order.bank_type,
                "success_time": v3wire.rfc3339(order.paid_at)}
    if forged:
        return {"transaction_id": "4200" + random_digits(24), "bank_type": "OTHERS",
                "success_time": v3wire.rfc3339(time.time())}
    return None


def refund_resource(refund, order):
    """A refund as POST /v3/refund/domestic/refunds and its query answer it."""
    out = {"refund_id": refund.refund_id, "out_refund_no": refund.out_refund_no,
           "transaction_id": refund.transaction_id, "out_trade_no": refund.out_trade_no,
           "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
           "create_time": v3wire.rfc3339(refund.created_at),
           "status": v3rules.REFUND_STATUS[refund.refund_status],
           "funds_account": refund.refund_account or "AVAILABLE",
           "amount": {"total": refund.total_fee, "refund": refund.refund_fee,
                      "payer_total": order.cash_fee if order else refund.total_fee,
                      "payer_refund": refund.refund_fee,
                      "settlement_refund": refund.refund_fee,
                      "settlement_total": refund.total_fee, "discount_refund": 0,
                      "currency": "CNY", "refund_fee": 0},
           "promotion_detail": []}
    if refund.refund_status == "SUCCESS":
        out["success_time"] = v3wire.rfc3339(refund.settled_at)
    return out


def refund_notice(refund, order, mode="normal"):
    """What REFUND.* notifications encrypt (WeChat's refund notification resource)."""
    out = {"mchid": refund.mch_id, "out_trade_no": refund.out_trade_no,
           "transaction_id": refund.transaction_id, "out_refund_no": refund.out_refund_no,
           "refund_id": refund.refund_id,
           "refund_status": v3rules.REFUND_STATUS[refund.refund_status],
           "user_received_account": "支付用户零钱",
           "amount": {"total": refund.total_fee, "refund": refund.refund_fee,
                      "payer_total": order.cash_fee if order else refund.total_fee,
                      "payer_refund": refund.refund_fee}}
    if refund.refund_status == "SUCCESS":
        out["success_time"] = v3wire.rfc3339(refund.settled_at)
    if mode == "wrong_amount":
        out["amount"]["refund"] += 1
        out["amount"]["payer_refund"] += 1
    return out


def payment_event(order, mode="normal"):
    """(event id, create_time, event_type, summary, original_type, plaintext dict)."""
    notify_id = order.notify_id or ("EV-" + random_digits(19))
    created = order.paid_at or time.time()
    resource = transaction(order, mode)
    if order.paid:
        # The event is the payment ("支付成功"): sent again later (a retry, a resend) it still
        # says SUCCESS, not the order's present REFUND that a query answers.
        resource.update(trade_state="SUCCESS", trade_state_desc=v3rules.TRADE_STATE_DESC["SUCCESS"])
    return (notify_id, created, "TRANSACTION.SUCCESS", "支付成功", "transaction", resource)


def refund_event(refund, order, mode="normal"):
    event_type, summary = v3rules.REFUND_EVENT.get(refund.refund_status,
                                                   ("REFUND.SUCCESS", "退款成功"))
    notify_id = refund.notify_id or ("EV-" + random_digits(19))
    return (notify_id, refund.settled_at or time.time(), event_type, summary, "refund",
            refund_notice(refund, order, mode))


def build(event, apiv3_key, signer, mode="normal"):
    """(body bytes, headers, facts) of one attempt: a fresh timestamp, nonce and resource
    nonce every time. signer: (Wechatpay-Serial, private key) of the key that signs."""
    notify_id, created, event_type, summary, original_type, plaintext = event
    resource = v3wire.encrypt(apiv3_key, json.dumps(plaintext, ensure_ascii=False),
                              original_type)
    resource = {"original_type": original_type, "algorithm": resource["algorithm"],
                "ciphertext": resource["ciphertext"],
                "associated_data": resource["associated_data"], "nonce": resource["nonce"]}
    body = json.dumps({"id": notify_id, "create_time": v3wire.rfc3339(created),
                       "resource_type": "encrypt-resource", "event_type": event_type,
                       "summary": summary, "resource": resource},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    serial, key = signer
    headers, facts = signed_headers(body, serial, key, mode)
    facts.update(event_type=event_type, notify_id=notify_id)
    return body, headers, facts


def signed_headers(body, serial, key, mode="normal"):
    """WeChat's five signature headers for body, as mode wants them; (headers, facts)."""
    timestamp = int(time.time())
    if mode == "stale_timestamp":
        timestamp -= STALE_SECONDS
    nonce = v3wire.nonce()
    message = v3wire.answer_message(str(timestamp), nonce, body)
    if mode == "bad_sign":
        signature = v3wire.sign(forger_key(), message)
    elif mode == "signtest":
        signature = v3wire.SIGNTEST_PREFIX + base64.b64encode(
            secrets.token_bytes(v3wire.RSA_SIGNATURE_BYTES)).decode("ascii")
    else:
        signature = v3wire.sign(key, message)
    if mode == "wrong_serial":
        serial = unknown_serial(serial)
    headers = {"Content-Type": "application/json", "Wechatpay-Timestamp": str(timestamp),
               "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature,
               "Wechatpay-Serial": serial,
               "Wechatpay-Signature-Type": v3wire.SIGNATURE_TYPE}
    return headers, {"wechatpay_serial": serial, "wechatpay_timestamp": timestamp}


def unknown_serial(serial):
    """A serial of the same kind as serial (PUB_KEY_ID_ or hex) that names no key."""
    if serial.startswith("PUB_KEY_ID_"):
        return "PUB_KEY_ID_0199" + random_digits(30)
    return "%X" % (secrets.randbits(156) | (1 << 156))


def forger_key():
    if not _FORGER:
        _FORGER.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _FORGER[0]
