"""The reconciliation tests' day, clock and fake bills: the PayClient's download_bill without WeChat."""
import datetime

from server.domain import SUCCESS
from server.wechat.bill import BillRow

DAY = datetime.date(2021, 1, 28)
NEXT_MORNING = datetime.datetime(2021, 1, 29, 10, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=8))).timestamp()


class Clock:
    def __init__(self, now=NEXT_MORNING):
        self.now = now

    def __call__(self):
        return self.now


class FakeBills:
    """The PayClient's download_bill: `rows`, after raising each of `errors` once."""

    def __init__(self, rows=(), errors=()):
        self.rows, self.errors, self.days = list(rows), list(errors), []

    async def download_bill(self, day):
        self.days.append(day)
        if self.errors:
            raise self.errors.pop(0)
        return list(self.rows)


def pay(no, fee=1200, tid=None, at="2021-01-28 10:10:10"):
    return BillRow("payment", at, tid or "42" + no, no, fee)


def refunded(no, trade, fee, status=SUCCESS):
    return BillRow("refund", "2021-01-20 09:00:00", "42" + trade, trade, 0, no, "50" + no, fee, status)
