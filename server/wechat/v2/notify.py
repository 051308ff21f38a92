"""v2 notifications opened and believed: payments (XML signed with the API key, in the order's sign type) and refund results (AES req_info)."""
from server.domain import PAY_V2
from server.wechat import PAYMENT, REFUND_RESULT, Notification, NotificationRefused, fen
from server.wechat.v2 import wire


async def open_payment(config, body, order_of):
    """The Notification of a payment notification, verified with its order's sign type;
    NotificationRefused (status 400) naming why it is not believed."""
    params = _parsed(body)
    if params.get("return_code") != "SUCCESS":
        raise NotificationRefused(400, "return_code is not SUCCESS")
    out_trade_no = params.get("out_trade_no", "")
    order = await order_of(out_trade_no)
    if order is None:
        raise NotificationRefused(400, "unknown order", out_trade_no)
    _check_signed(config, params, order)
    if params.get("appid") != config.appid or params.get("mch_id") != config.mch_id:
        raise NotificationRefused(400, "appid or mch_id does not match", out_trade_no)
    paid = params.get("result_code") == "SUCCESS"
    # a failed payment's amount is evidence of nothing: only a paid one's is compared with the order
    return Notification(kind=PAYMENT, id=out_trade_no, order=order, out_trade_no=out_trade_no,
                        transaction_id=params.get("transaction_id"),
                        trade_state="SUCCESS" if paid else "FAIL (%s)" % str(params.get("err_code"))[:32],
                        total_fee=fen(params.get("total_fee")) if paid else None,
                        time_end=params.get("time_end", ""))


def _check_signed(config, params, order):
    if not config.api_key or order.pay_version != PAY_V2:
        # v3 mode without a v2 key, or an order paid through v3: nothing to verify a v2 sign with
        raise NotificationRefused(400, "v2 notifications are not accepted for this order", order.out_trade_no)
    declared = params.get("sign_type")
    if declared is not None and declared != order.sign_type:
        raise NotificationRefused(400, "sign_type %s does not match the order's %s" % (declared[:16], order.sign_type),
                                  order.out_trade_no)
    if not wire.verify(params, config.api_key, order.sign_type):
        raise NotificationRefused(400, "signature mismatch", order.out_trade_no)


def open_refund(config, body):
    """The Notification of a refund result: envelope checked, req_info decrypted with the
    API key (what proves it is WeChat's: it carries no sign); NotificationRefused."""
    params = _parsed(body)
    if not config.api_key:
        raise NotificationRefused(400, "v2 refund notifications are not accepted: no WECHAT_API_KEY to decrypt them with")
    if params.get("return_code") != "SUCCESS":
        raise NotificationRefused(400, "return_code is not SUCCESS")
    if params.get("appid") != config.appid or params.get("mch_id") != config.mch_id:
        raise NotificationRefused(400, "appid or mch_id does not match")
    if not params.get("req_info"):
        raise NotificationRefused(400, "req_info missing")
    try:
        info = wire.decrypt_req_info(params["req_info"], config.api_key)
    except wire.XMLError as exc:
        raise NotificationRefused(400, str(exc)) from None
    return Notification(kind=REFUND_RESULT, id=str(info.get("out_refund_no"))[:64], out_trade_no=info.get("out_trade_no"),
                        out_refund_no=info.get("out_refund_no"), refund_id=info.get("refund_id"),
                        refund_status=info.get("refund_status"), refund_fee=fen(info.get("refund_fee")),
                        total_fee=fen(info.get("total_fee")), success_time=info.get("success_time"))


def reply(problem):
    """WeChat reads only return_code: anything but SUCCESS makes it deliver again later."""
    return wire.SUCCESS_REPLY if problem is None else wire.fail_reply(problem)


def _parsed(body):
    try:
        return wire.from_xml(body)
    except wire.XMLError as exc:
        raise NotificationRefused(400, "invalid XML: %s" % exc) from None
