"""v3 GET /v3/bill/tradebill and /v3/bill/fundflowbill (signed requests, signed answers
{hash_type, hash_value, download_url}) and GET download_url (a signed request, the file as
the unsigned answer), the bill made when it is applied for (docs/simulator.md "Bills")."""
import dataclasses
import gzip
import hashlib
import secrets

from simulator import bills
from simulator.endpoint import V3_BILL_APIS
from simulator.v3.api import V3Endpoint
from simulator.v3.rules import V3Error

TRADEBILL, FUNDFLOWBILL, DOWNLOAD = V3_BILL_APIS
DOWNLOAD_TTL = 300.0        # WeChat: download_url "该地址5min内有效" (seconds, scaled)
ACCOUNT_TYPES = ("BASIC", "OPERATION", "FEES")
MAX_FILES = 1000            # download tokens remembered at once; the oldest go first


@dataclasses.dataclass
class BillFile:
    """What one download_url serves: whose it is, the bill and until when."""
    mchid: str
    text: str
    gzip: bool
    expires_at: float


class BillApplication(V3Endpoint):
    """GET /v3/bill/...?bill_date=yyyy-MM-dd&...&tar_type=GZIP -> the file's hash and URL."""
    method = "GET"

    def rules(self, body):
        day = self.bill_date()
        kind = self.kind()
        tar_type = self.get_query_argument("tar_type", "")
        if tar_type not in ("", "GZIP"):
            raise V3Error("PARAM_ERROR", detail="tar_type is GZIP or absent, not %r" % tar_type)
        try:
            text = bills.of_state(self.state, self.auth["mchid"], day, kind)
        except bills.NoBill as exc:
            raise no_statement(exc) from None
        token = remember(self.state, BillFile(self.auth["mchid"], text, tar_type == "GZIP",
                                              self.state.clock.now()
                                              + self.state.clock.scaled(DOWNLOAD_TTL)))
        url = "%s://%s%s?token=%s" % (self.request.protocol, self.request.host, DOWNLOAD, token)
        return 200, {"hash_type": "SHA1", "download_url": url,
                     "hash_value": hashlib.sha1(text.encode("utf-8")).hexdigest()}

    def bill_date(self):
        text = self.get_query_argument("bill_date", "")
        if not text:
            raise V3Error("PARAM_ERROR", detail="the query string lacks bill_date")
        self.entry["bill_date"] = text
        try:
            return bills.parse_day(text, "%Y-%m-%d")
        except bills.NoBill as exc:
            raise V3Error("PARAM_ERROR", detail=exc.detail) from None

    def kind(self):
        raise NotImplementedError


class TradeBillHandler(BillApplication):
    api = TRADEBILL

    def kind(self):
        bill_type = self.get_query_argument("bill_type", "") or "ALL"
        if bill_type not in bills.BILL_TYPES:
            raise V3Error("PARAM_ERROR", detail="bill_type must be one of %s, not %r"
                          % (", ".join(bills.BILL_TYPES), bill_type))
        return bill_type


class FundFlowBillHandler(BillApplication):
    api = FUNDFLOWBILL

    def kind(self):
        account = self.get_query_argument("account_type", "") or "BASIC"
        if account not in ACCOUNT_TYPES:
            raise V3Error("PARAM_ERROR", detail="account_type must be one of %s, not %r"
                          % (", ".join(ACCOUNT_TYPES), account))
        if account != "BASIC":
            # the simulator's merchants have a basic account only
            raise V3Error("NO_STATEMENT_EXIST", "账单文件不存在",
                          detail="the simulator keeps no %s account" % account)
        return "FUNDFLOW"


def no_statement(exc):
    """NoBill -> WeChat's error: the day not over yet STATEMENT_CREATING, a day without
    trades NO_STATEMENT_EXIST, a date in the future or older than three months
    INVALID_REQUEST."""
    if exc.reason == "not_ended":
        return V3Error("STATEMENT_CREATING", "账单生成中", detail=exc.detail)
    if exc.reason == "empty":
        return V3Error("NO_STATEMENT_EXIST", "账单文件不存在", detail=exc.detail)
    return V3Error("INVALID_REQUEST", "请检查bill_date，并重新调用", detail=exc.detail)


def remember(state, bill_file):
    """A fresh download token for bill_file; expired ones (and past MAX_FILES the oldest)
    are forgotten."""
    now = state.clock.now()
    files = state.bill_files
    for token in [t for t, f in files.items() if f.expires_at <= now]:
        del files[token]
    while len(files) >= MAX_FILES:
        del files[next(iter(files))]
    token = secrets.token_urlsafe(48)
    files[token] = bill_file
    return token


class BillDownloadHandler(V3Endpoint):
    """GET /v3/billdownload/file?token=: the file, unsigned (as WeChat serves it); a token
    unknown or expired is 400 INVALID_REQUEST, another merchant's 403 NO_AUTH."""
    api = DOWNLOAD
    method = "GET"

    def rules(self, body):
        bill_file = self.state.bill_files.get(self.get_query_argument("token", ""))
        if bill_file is None or bill_file.expires_at <= self.state.clock.now():
            raise V3Error("INVALID_REQUEST", "请按第一步申请账单的API指引，重新获取账单地址后再请求",
                          detail="the download token is unknown or expired (it lives %d s)"
                          % DOWNLOAD_TTL)
        if bill_file.mchid != self.auth["mchid"]:
            raise V3Error("NO_AUTH", "商户无权限", status=403,
                          detail="the bill is merchant %s's" % bill_file.mchid)
        return 200, bill_file

    def answer(self, status, bill_file):
        self.entry["status"] = status
        data = bill_file.text.encode("utf-8")
        if bill_file.gzip:
            self.set_header("Content-Type", "application/octet-stream")
            data = gzip.compress(data, mtime=0)
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(data)


def routes():
    return [(r"/v3/bill/tradebill/?", TradeBillHandler),
            (r"/v3/bill/fundflowbill/?", FundFlowBillHandler),
            (r"/v3/billdownload/file/?", BillDownloadHandler)]
