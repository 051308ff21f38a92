"""The reconciliation tests' day, clock and fake bills: the PayClient's download_bill without WeChat."""
import datetime

from server.domain import SUCCESS
from server.wechat.bill import BillRow
from tests.support import DEMO

# The ALL bill's header and summary header, as WeChat's samples have them (test_reconciliation_bill.py)
HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
          "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
          "手续费,费率,订单金额,申请退款金额,费率备注")
SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
DAY = datetime.date(2021, 1, 28)
NEXT_MORNING = datetime.datetime(2021, 1, 29, 10, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=8))).timestamp()


class Clock:
    def __init__(self, now=NEXT_MORNING):
        self.now = now

    def __call__(self):
        return self.now


class FakeBills:
    """The PayClient's download_bill: `rows`, after raising each of `errors` once; order_query and
    refund_query answer as the bill has it, or as `answers` (number -> answer) says."""

    def __init__(self, rows=(), errors=(), answers=None):
        self.rows, self.errors, self.days = list(rows), list(errors), []
        self.answers, self.queried = dict(answers or {}), []

    async def order_query(self, out_trade_no):
        self.queried.append(out_trade_no)
        paid = [r for r in self.rows if r.kind == "payment" and r.out_trade_no == out_trade_no]
        known = {"trade_state": SUCCESS, "total_fee": paid[0].total_fee, "transaction_id": paid[0].transaction_id,
                 "time_end": paid[0].trade_time} if paid else {"trade_state": "NOTPAY"}
        return self.answers.get(out_trade_no, known)

    async def refund_query(self, out_refund_no):
        self.queried.append(out_refund_no)
        known = [{"out_refund_no": r.out_refund_no, "refund_fee": r.refund_fee, "refund_status": r.refund_status,
                  "refund_id": r.refund_id} for r in self.rows if r.out_refund_no == out_refund_no]
        return self.answers.get(out_refund_no, known)

    async def download_bill(self, day):
        self.days.append(day)
        if self.errors:
            raise self.errors.pop(0)
        return list(self.rows)


def pay(no, fee=1200, tid=None, at="2021-01-28 10:10:10"):
    return BillRow("payment", at, tid or "42" + no, no, fee, appid=DEMO["appid"], mch_id=DEMO["mch_id"])


def refunded(no, trade, fee, status=SUCCESS):
    return BillRow("refund", "2021-01-20 09:00:00", "42" + trade, trade, 0, no, "50" + no, fee, status,
                   appid=DEMO["appid"], mch_id=DEMO["mch_id"])
