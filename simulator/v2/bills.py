"""v2 POST /pay/downloadbill: the trade bill of a Beijing day as text (gzip with tar_type
GZIP), or WeChat's XML failure with return_msg and error_code (docs/simulator.md "Bills")."""
import gzip

from simulator import bills
from simulator.v2.api import PayHandler
from simulator.v2.rules import ProtocolFail

# The bill answers' own error codes (WeChat: 20001 a bad request, 20002 No Bill Exist).
PARAM_ERROR_CODE = "20001"
NO_BILL_CODE = "20002"
NO_BILL = "No Bill Exist"
BILL_TYPES = bills.BILL_TYPES + ("RECHARGE_REFUND",)


class BillFail(ProtocolFail):
    """A failure of a bill request: return_code FAIL, return_msg and error_code."""

    def __init__(self, return_msg, error_code, detail=None):
        super().__init__(return_msg, detail)
        self.error_code = error_code


class DownloadBillHandler(PayHandler):
    """POST /pay/downloadbill: signed like every v2 call (MD5 or HMAC-SHA256); the answer is
    the bill itself, not XML, and carries no signature."""
    api = "/pay/downloadbill"
    required = PayHandler.required + ("bill_date",)

    def rules(self, msg):
        bill_type = msg.get("bill_type") or "ALL"
        if bill_type not in BILL_TYPES:
            raise BillFail("invalid bill_type", PARAM_ERROR_CODE,
                           "bill_type must be one of " + ", ".join(BILL_TYPES))
        tar_type = msg.get("tar_type", "")
        if tar_type not in ("", "GZIP"):
            raise BillFail("invalid tar_type", PARAM_ERROR_CODE, "tar_type is GZIP or absent")
        self.entry.update(bill_date=msg["bill_date"], bill_type=bill_type)
        try:
            day = bills.parse_day(msg["bill_date"], "%Y%m%d")
            if bill_type == "RECHARGE_REFUND":      # the simulator has no recharge coupons
                raise bills.NoBill("empty", "there are no recharge-coupon refunds here")
            text = bills.of_state(self.state, self.merchant.mch_id, day, bill_type)
        except bills.NoBill as exc:
            raise no_bill(exc) from None
        return text, tar_type

    def answer(self, result):
        text, tar_type = result
        data = text.encode("utf-8")
        if tar_type == "GZIP":
            self.set_header("Content-Type", "application/octet-stream")
            return self.finish(gzip.compress(data, mtime=0))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(data)

    def fail(self, exc):
        code = getattr(exc, "error_code", PARAM_ERROR_CODE)
        self.entry.update(error=exc.return_msg, detail=exc.detail, return_code="FAIL")
        self.write_xml({"return_code": "FAIL", "return_msg": exc.return_msg,
                        "error_code": code})


def no_bill(exc):
    """NoBill -> WeChat's answer: a day without a bill (yet) is No Bill Exist; a date that
    is malformed, in the future or older than three months is invalid."""
    if exc.reason in ("not_ended", "empty"):
        return BillFail(NO_BILL, NO_BILL_CODE, exc.detail)
    return BillFail("invalid bill_date", PARAM_ERROR_CODE, exc.detail)
