"""What WeChat POSTs to a notify_url: the payment notification (signed XML) and the refund
notification (encrypted req_info, no sign), and the forgeries a backend must refuse."""
import time

from simulator.models import beijing, random_digits
from simulator.v2 import wire as v2wire

# Modes of POST /sim/orders/<no>/notify and of POST /sim/refunds/<out_refund_no>/notify.
# with_sign_type: a genuine notification that carries sign_type (signed with the rest), as
# real WeChat's sometimes do; ordinary deliveries do too with --notify-sign-type-probability.
MODES = ("normal", "duplicate", "bad_sign", "wrong_amount", "with_sign_type")
FORGED = ("bad_sign", "wrong_amount")
REFUND_MODES = ("normal", "duplicate", "bad_key", "wrong_amount")
REFUND_FORGED = ("bad_key", "wrong_amount")


def payment_fields(order, merchant, mode="normal", sign_type_field=False):
    """The notification of a paid order, signed with the order's sign type.

    Like real WeChat it usually carries no sign_type field, so a receiver that assumes MD5
    fails on HMAC-SHA256 orders; with sign_type_field (mode with_sign_type, or the configured
    probability) it carries sign_type = the order's sign type, signed with the rest, so a
    receiver that drops it before verifying fails. device_info is echoed when unifiedorder
    had one; a coupon payment adds WeChat's coupon fields and a cash_fee below total_fee.
    """
    paid = _payment_facts(order)
    fields = {
        "appid": order.appid, "bank_type": paid["bank_type"], "cash_fee": str(order.cash_fee),
        "fee_type": order.fields.get("fee_type") or "CNY", "is_subscribe": "N",
        "mch_id": order.mch_id, "nonce_str": v2wire.nonce(), "openid": order.openid,
        "out_trade_no": order.out_trade_no, "result_code": "SUCCESS", "return_code": "SUCCESS",
        "time_end": paid["time_end"], "total_fee": str(order.total_fee),
        "trade_type": order.fields["trade_type"], "transaction_id": paid["transaction_id"],
    }
    if order.fields.get("attach"):
        fields["attach"] = order.fields["attach"]
    if order.device_info:
        fields["device_info"] = order.device_info
    fields.update(order.coupon_fields())
    if sign_type_field or mode == "with_sign_type":
        fields["sign_type"] = order.sign_type
    if mode == "wrong_amount":
        # A forgery after a key leak: correctly signed, but not the order's amount.
        fields["total_fee"] = str(order.total_fee + 1)
        fields["cash_fee"] = str(order.cash_fee + 1)
        if "settlement_total_fee" in fields:
            fields["settlement_total_fee"] = str(order.settlement_total_fee + 1)
    key = merchant.key(order.sandbox)
    fields["sign"] = v2wire.sign(fields, key, order.sign_type)
    if mode == "bad_sign":  # signed, but not with the merchant's key
        fields["sign"] = v2wire.sign(fields, v2wire.nonce(), order.sign_type)
    return fields


def _payment_facts(order):
    """The order's payment, or made-up facts for a forgery about an unpaid order."""
    if order.transaction_id:
        return {"bank_type": order.bank_type, "time_end": order.time_end,
                "transaction_id": order.transaction_id}
    return {"bank_type": "OTHERS", "time_end": beijing(time.time()),
            "transaction_id": "4200" + random_digits(24)}


def refund_plaintext(refund, mode="normal"):
    """What req_info holds for a settled refund."""
    fields = {
        "out_refund_no": refund.out_refund_no, "out_trade_no": refund.out_trade_no,
        "refund_account": refund.refund_account, "refund_fee": str(refund.refund_fee),
        "refund_id": refund.refund_id, "refund_recv_accout": refund.refund_recv_accout,
        "refund_request_source": refund.request_source, "refund_status": refund.refund_status,
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


def refund_fields(refund, merchant, mode="normal"):
    """The refund notification: return_code, appid, mch_id, nonce_str, req_info; no sign."""
    key = merchant.key(refund.sandbox)
    if mode == "bad_key":   # encrypted, but not with this merchant's key
        key = v2wire.nonce()
    req_info = v2wire.encrypt_req_info(v2wire.root_xml(refund_plaintext(refund, mode)), key)
    return {"return_code": "SUCCESS", "appid": refund.appid, "mch_id": refund.mch_id,
            "nonce_str": v2wire.nonce(), "req_info": req_info}
