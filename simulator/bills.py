"""WeChat's bills made from the simulator's state: the trade bill (ALL / SUCCESS / REFUND) and
the fund-flow bill of one merchant and one Beijing calendar day, in WeChat's text format.

Format (docs/simulator.md "Bills" cites a source for each fact): a header row of Chinese
column names, one row per payment and per refund with a backquote before every field, a
summary header and one summary row; UTF-8, every line ending CRLF; amounts in yuan with two
decimals, the fee (手续费) with five, as WeChat writes it.
"""
import calendar
import dataclasses
import datetime
import hashlib

from simulator.models import BEIJING, beijing

FEE_RATE_BP = 60            # 0.60%, in basis points
FEE_RATE = "0.60%"
KEEP_MONTHS = 3             # 对账单接口只能下载三个月以内的账单
BILL_TYPES = ("ALL", "SUCCESS", "REFUND")
TIME = "%Y-%m-%d %H:%M:%S"
CRLF = "\r\n"
_HEAD = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
         "交易状态,付款银行,货币种类,应结订单金额,代金券金额")
_TAIL = "商品名称,商户数据包,手续费,费率,订单金额"
HEADERS = {
    "ALL": _HEAD + ",微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
           + _TAIL + ",申请退款金额,费率备注",
    "SUCCESS": _HEAD + "," + _TAIL + ",费率备注",
    "REFUND": _HEAD + ",退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
              "退款类型,退款状态," + _TAIL + ",申请退款金额,费率备注",
}
SUMMARY_HEADER = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
FUND_HEADER = ("记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),"
               "账户结余(元),资金变更提交申请人,备注,业务凭证号")
FUND_SUMMARY_HEADER = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"


class NoBill(Exception):
    """There is no bill: `reason` is one of "invalid_date", "too_old", "future",
    "not_ended" (the day has not ended on the simulator's clock), "empty" (no trade)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def yuan(fen):
    """Integer fen -> yuan with two decimals ("-0.27" for -27)."""
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % (sign, abs(fen) // 100, abs(fen) % 100)


def fee_yuan(fen):
    """The fee column: yuan with five decimals, as WeChat writes it ("0.04000")."""
    return yuan(fen) + "000"


def fee_of(fen):
    """0.60% of fen, rounded half up to the fen (6.00 -> 0.036 -> 0.04, as in WeChat's bills)."""
    return (abs(fen) * FEE_RATE_BP + 5000) // 10000 * (1 if fen >= 0 else -1)


def parse_day(text, fmt):
    """bill_date in fmt (v2 %Y%m%d, v3 %Y-%m-%d) -> date, or NoBill("invalid_date")."""
    try:
        day = datetime.datetime.strptime(text or "", fmt).date()
    except ValueError:
        raise NoBill("invalid_date", "bill_date %r is not a date in the form %s"
                     % (text, fmt.replace("%Y", "yyyy").replace("%m", "MM").replace("%d", "dd")))
    if day.strftime(fmt) != text:       # strptime takes 2024-1-5 and 2024015
        raise NoBill("invalid_date", "bill_date %r is not zero-padded %s" % (text, fmt))
    return day


def bounds(day):
    """The Beijing day as [start, end) POSIX timestamps."""
    start = datetime.datetime.combine(day, datetime.time(), BEIJING)
    return start.timestamp(), (start + datetime.timedelta(days=1)).timestamp()


def check_available(day, now):
    """NoBill unless the day has ended on the clock (now) and is within KEEP_MONTHS."""
    today = datetime.datetime.fromtimestamp(now, BEIJING).date()
    if day > today:
        raise NoBill("future", "%s is after today (%s) on the simulator's clock" % (day, today))
    if day == today:
        raise NoBill("not_ended", "%s has not ended on the simulator's clock (POST /sim/clock "
                     "moves it): WeChat makes a day's bill the next morning" % day)
    if day < months_before(today, KEEP_MONTHS):
        raise NoBill("too_old", "%s is more than %d months before today (%s): WeChat keeps "
                     "bills for three months" % (day, KEEP_MONTHS, today))


def months_before(day, months):
    """The same day of the month `months` earlier (that month's last day when it is shorter)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return day.replace(year=year, month=month + 1, day=min(day.day, last))


@dataclasses.dataclass
class Entry:
    """One detail row: a payment (refund None) or a refund of `order`."""
    time: float
    order: object
    refund: object = None


def entries(orders, refunds, mch_id, day):
    """The day's payments (by paid_at) and refunds (by when they were requested), in time
    order; unpaid and closed orders have no paid_at and are in no bill."""
    start, end = bounds(day)
    rows = [Entry(o.paid_at, o) for o in orders
            if o.mch_id == mch_id and o.transaction_id and start <= o.paid_at < end]
    by_no = {(o.mch_id, o.out_trade_no): o for o in orders}
    rows += [Entry(r.created_at, by_no[(r.mch_id, r.out_trade_no)], r) for r in refunds
             if r.mch_id == mch_id and start <= r.created_at < end
             and (r.mch_id, r.out_trade_no) in by_no]
    return sorted(rows, key=lambda e: e.time)


def refund_status_at(refund, moment):
    """The refund's status as the bill saw it at the day's end: a refund settled later is
    still PROCESSING in that day's bill."""
    if refund.refund_status != "PROCESSING" and refund.settled_at < moment:
        return refund.refund_status
    return "PROCESSING"


def amounts(entry):
    """(应结订单金额, 代金券金额, 退款金额, 手续费, 订单金额, 申请退款金额) in fen."""
    if entry.refund is None:
        order = entry.order
        settled = order.settlement_total_fee
        return settled, order.coupon_fee, 0, fee_of(settled), order.total_fee, 0
    fee = entry.refund.refund_fee
    return 0, 0, fee, -fee_of(fee), 0, fee


def columns(entry, bill_type, day_end):
    """The values of one detail row of a bill_type bill, in its header's order."""
    order, refund = entry.order, entry.refund
    settled, coupon, refunded, fee, total, applied = amounts(entry)
    head = [beijing(entry.time, TIME), order.appid, order.mch_id, "0", order.device_info,
            order.transaction_id, order.out_trade_no, order.openid,
            order.fields["trade_type"], "REFUND" if refund else "SUCCESS", order.bank_type,
            "CNY", yuan(settled), yuan(coupon)]
    tail = [order.fields.get("body", ""), order.fields.get("attach", ""), fee_yuan(fee),
            FEE_RATE, yuan(total)]
    if bill_type == "SUCCESS":
        return head + tail + [""]
    if refund is None:
        middle = ["0", "0", "0.00", "0.00", "", ""]
    else:
        middle = [refund.refund_id, refund.out_refund_no, yuan(refunded), "0.00",
                  refund.refund_channel, refund_status_at(refund, day_end)]
    if bill_type == "REFUND":
        done = refund.settled_at < day_end and refund.refund_status == "SUCCESS"
        middle = [beijing(refund.created_at, TIME),
                  beijing(refund.settled_at, TIME) if done else ""] + middle
    return head + middle + tail + [yuan(applied), ""]


def line(values):
    return ",".join("`" + str(v) for v in values) + CRLF


def trade_bill(orders, refunds, mch_id, day, bill_type="ALL"):
    """The trade bill's text; NoBill("empty") when the day has no row of this bill_type."""
    rows = entries(orders, refunds, mch_id, day)
    if bill_type == "SUCCESS":
        rows = [e for e in rows if e.refund is None]
    elif bill_type == "REFUND":
        rows = [e for e in rows if e.refund is not None]
    if not rows:
        raise NoBill("empty", "merchant %s has no %s trade on %s" % (mch_id, bill_type, day))
    day_end = bounds(day)[1]
    sums = [sum(col) for col in zip(*(amounts(e) for e in rows))]
    settled, _, refunded, fee, total, applied = sums
    summary = [len(rows), yuan(settled), yuan(refunded), "0.00", fee_yuan(fee), yuan(total),
               yuan(applied)]
    text = HEADERS[bill_type] + CRLF
    text += "".join(line(columns(e, bill_type, day_end)) for e in rows)
    return text + SUMMARY_HEADER + CRLF + line(summary)


def fund_flows(orders, refunds, mch_id):
    """Every movement of the merchant's basic account, in time order: (time, business id,
    name, type, income?, fen, voucher). A payment brings its settlement amount in and its
    fee out; a refund goes out when it succeeds."""
    flows = []
    for o in orders:
        if o.mch_id == mch_id and o.transaction_id:
            settled = o.settlement_total_fee
            flows.append((o.paid_at, o.transaction_id, "交易", "交易", True, settled,
                          o.out_trade_no))
            if fee_of(settled):
                flows.append((o.paid_at, o.transaction_id, "交易", "扣除交易手续费", False,
                              fee_of(settled), o.out_trade_no))
    for r in refunds:
        if r.mch_id == mch_id and r.refund_status == "SUCCESS":
            flows.append((r.settled_at, r.refund_id, "退款", "退款", False, r.refund_fee,
                          r.out_refund_no))
    return sorted(flows, key=lambda f: f[0])


def fund_flow_bill(orders, refunds, mch_id, day):
    """The fund-flow bill (BASIC account) of the day, with the balance after each row."""
    start, end = bounds(day)
    balance, rows = 0, []
    for when, business_id, name, kind, income, fen, voucher in fund_flows(orders, refunds,
                                                                          mch_id):
        if when >= end:
            break
        balance += fen if income else -fen
        if when >= start:
            flow_id = flow_number(business_id, kind)
            rows.append((income, fen, [beijing(when, TIME), business_id, flow_id, name, kind,
                                       "收入" if income else "支出", yuan(fen), yuan(balance),
                                       "system", "", voucher]))
    if not rows:
        raise NoBill("empty", "merchant %s's account did not move on %s" % (mch_id, day))
    income = [fen for inc, fen, _ in rows if inc]
    spent = [fen for inc, fen, _ in rows if not inc]
    summary = [len(rows), len(income), yuan(sum(income)), len(spent), yuan(sum(spent))]
    text = FUND_HEADER + CRLF + "".join(line(values) for _, _, values in rows)
    return text + FUND_SUMMARY_HEADER + CRLF + line(summary)


def flow_number(business_id, kind):
    """A stable 28-digit 资金流水单号 for one movement (the same in every download)."""
    digest = hashlib.sha256(("%s\0%s" % (business_id, kind)).encode("utf-8")).hexdigest()
    return "%028d" % (int(digest, 16) % 10 ** 28)


def of_state(state, mch_id, day, kind="ALL"):
    """The bill (kind: a trade bill_type, or "FUNDFLOW") of one merchant's day from the
    simulator's state, or NoBill; reads only."""
    check_available(day, state.clock.now())
    orders, refunds = list(state.orders.values()), list(state.refunds.values())
    if kind == "FUNDFLOW":
        return fund_flow_bill(orders, refunds, mch_id, day)
    return trade_bill(orders, refunds, mch_id, day, kind)
