"""The trade bill (server/wechat/bill.py) read from WeChat's documented sample rows, and downloaded by
both pay clients from a small fake WeChat in process (v2: the text, gzip or XML error; v3: tradebill's
signed answer, the file and its SHA1)."""
import datetime
import gzip
import hashlib
import json
import time

import pytest
import tornado.testing
import tornado.web
from tornado.httpserver import HTTPServer

from server.config import Config
from server.wechat import UpstreamError, bill
from server.wechat.v2 import wire as v2_wire
from server.wechat.v2.client import WeChatClient
from server.wechat.v3.client import WeChatClientV3
from simulator.v3 import wire as protocol3
from tests.support import DEMO
from tests.support.bills import HEADER, SUMMARY
from tests.support.server3 import PUB_KEY_ID, WECHATPAY_KEY, v3_values

# Rows of WeChat's samples as SDKs carry them (wechatpay-go's TestDownloadForClient, a v3 tradebill;
# WxJava's bill tests for the refund rows): every field after a backquote, the fee with five decimals.
PAYMENT_ROW = ("`2021-01-28 17:07:11,`wx81be3101902f7cb2,`1601959334,`0,`,`4200000925202101284997714292,"
               "`S20210128170702357723,`ofyak5qR_1wYsC99CsWA6R9MJazA,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,"
               "`0,`0.00,`0.00,`,`,`for testing,`cipher code,`0.00000,`1.00%,`0.01,`0.00,`")
REFUND_ROW = ("`2021-01-24 16:16:25,`wx81be3101902f7cb2,`1601959334,`0,`,`4200000844202101245866928772,"
              "`S20210124161554311546,`ofyak5qR_1wYsC99CsWA6R9MJazA,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
              "`50300807172021020106006664916,`S20210201143320649393,`0.01,`0.00,`ORIGINAL,`SUCCESS,`for testing,"
              "`cipher code,`0.00000,`1.00%,`0.00,`0.01,`")
# the older 24-column layout of the v2 docs (总金额, no 订单金额), from the chapter=9_6 example
OLD_HEADER = ("交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
              "总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,"
              "商户数据包,手续费,费率")
OLD_ROW = ("`2014-11-10 16:33:45,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1001690740201411100005734289,`1415640626,"
           "`085e9858e3ba5186aafcbaed1,`MICROPAY,`SUCCESS,`CFT,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,`订单额外描述,"
           "`0,`0.60%")


def text(*rows, summary=None, header=HEADER):
    lines = [header, *rows, SUMMARY, summary or "`%d,`0.01,`0.01,`0.00,`0.00000,`0.01,`0.01" % len(rows)]
    return "\r\n".join(lines) + "\r\n"


def test_wechats_sample_rows_read_in_fen():
    payment, refund = bill.parse(text(PAYMENT_ROW, REFUND_ROW).encode())
    assert payment == bill.BillRow("payment", "2021-01-28 17:07:11", "4200000925202101284997714292",
                                   "S20210128170702357723", 1, appid="wx81be3101902f7cb2", mch_id="1601959334")
    assert refund.kind == "refund" and refund.out_refund_no == "S20210201143320649393"
    assert (refund.refund_id, refund.refund_fee, refund.refund_status) == ("50300807172021020106006664916", 1, "SUCCESS")
    assert refund.out_trade_no == "S20210124161554311546"


def test_the_older_layout_and_a_bom_read_too():
    rows = bill.parse("\ufeff" + OLD_HEADER + "\n" + OLD_ROW + "\n总交易单数,总交易额,总退款金额\n`1,`0.01,`0\n")
    assert [(r.kind, r.out_trade_no, r.total_fee) for r in rows] == [("payment", "1415640626", 1)]


@pytest.mark.parametrize("yuan, fen", [("12.34", 1234), ("0.01", 1), ("0.1", 10), ("7", 700), ("1299.02", 129902),
                                       ("21474836.47", 2147483647), ("-0.05", -5)])
def test_yuan_become_fen_exactly(yuan, fen):
    assert bill.fen_of_yuan(yuan) == fen


@pytest.mark.parametrize("bad", ["", "1.234", "1e3", "0x10", " 1.00", "1,00", "NaN", "4.00123E+27"])
def test_what_is_not_an_amount_is_refused(bad):
    with pytest.raises(bill.BillError):
        bill.fen_of_yuan(bad)


@pytest.mark.parametrize("broken, why", [
    ("", "empty"),
    ("<xml><return_code>FAIL</return_code></xml>", "lacks"),
    (HEADER + "\n`2021-01-28,`wx,`1\n", "fields"),
    (text(PAYMENT_ROW, summary="`2,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00"), "summary counts 2"),
])
def test_a_bill_that_is_not_wechats_is_refused(broken, why):
    with pytest.raises(bill.BillError, match=why):
        bill.parse(broken)


def test_gunzip_is_bounded():
    bomb = gzip.compress(b"0" * 100_000)
    assert bill.gunzip(bomb, 100_000) == b"0" * 100_000
    with pytest.raises(bill.BillError, match="more than 99999 bytes"):
        bill.gunzip(bomb, 99_999)
    with pytest.raises(bill.BillError, match="cut short"):
        bill.gunzip(bomb[:-12], 200_000)
    with pytest.raises(bill.BillError, match="not a gzip"):
        bill.gunzip(b"\x1f\x8bnot gzip at all", 1000)


# -- the clients, against a fake WeChat in process --------------------------------------
class FakeWeChat(tornado.web.RequestHandler):
    """Answers what the test put in `answers[path]`: (status, body, headers); records requests."""

    def initialize(self, fake):
        self.fake = fake

    def handle(self):
        self.fake.requests.append(self.request)
        status, body, headers = self.fake.answers[self.request.path]
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.finish(body)

    get = post = handle


@pytest.fixture
def fake(io_loop):
    class Fake:
        answers, requests = {}, []
    sock, port = tornado.testing.bind_unused_port()
    server = HTTPServer(tornado.web.Application([(r"/.*", FakeWeChat, {"fake": Fake})]))
    server.add_sockets([sock])
    Fake.url = "http://127.0.0.1:%d" % port
    yield Fake
    server.stop()


def v2_client(fake, **overrides):
    values = dict(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"], api_key=DEMO["api_key"],
                  notify_url="http://127.0.0.1:1/wechat/pay/notify", login_base_url=fake.url, pay_base_url=fake.url,
                  timeout=3.0)
    values.update(overrides)
    return WeChatClient(Config(**values))


DAY = datetime.date(2021, 1, 28)


@pytest.mark.gen_test
async def test_v2_downloads_the_gzipped_bill_it_signed_for(fake):
    fake.answers["/pay/downloadbill"] = (200, gzip.compress(text(PAYMENT_ROW).encode()), {})
    client = v2_client(fake, sign_type="HMAC-SHA256")
    try:
        rows = await client.download_bill(DAY)
    finally:
        client.close()
    assert [r.out_trade_no for r in rows] == ["S20210128170702357723"]
    sent = v2_wire.from_xml(fake.requests[-1].body)
    assert (sent["bill_date"], sent["bill_type"], sent["tar_type"], sent["sign_type"]) == (
        "20210128", "ALL", "GZIP", "HMAC-SHA256")
    assert v2_wire.verify(sent, DEMO["api_key"], "HMAC-SHA256")


@pytest.mark.gen_test
async def test_v2_no_bill_exist_is_not_ready_and_other_errors_are_upstream_errors(fake):
    client = v2_client(fake)
    try:
        fake.answers["/pay/downloadbill"] = (200, "<xml><return_code>FAIL</return_code><return_msg>No Bill Exist"
                                             "</return_msg><error_code>20002</error_code></xml>", {})
        with pytest.raises(bill.BillNotReady) as info:
            await client.download_bill(DAY)
        assert (info.value.status, info.value.code, info.value.wechat_code, info.value.empty_day) == (
            409, "BILL_NOT_READY", "20002", True)
        fake.answers["/pay/downloadbill"] = (200, "<xml><return_code>FAIL</return_code><return_msg>invalid bill_date"
                                             "</return_msg><error_code>20001</error_code></xml>", {})
        with pytest.raises(UpstreamError, match="invalid bill_date.*20001"):
            await client.download_bill(DAY)
    finally:
        client.close()
    fake.answers["/pay/downloadbill"] = (200, gzip.compress(b"x" * 5000), {})
    small = v2_client(fake, bill_max_bytes=2048)
    try:
        with pytest.raises(bill.BillError, match="more than 2048 bytes"):
            await small.download_bill(DAY)
    finally:
        small.close()


def signed(status, payload):
    """A v3 answer signed with WeChat's key (the WeChat Pay public key mode)."""
    body = json.dumps(payload).encode()
    stamp, nonce = str(int(time.time())), "n" * 32
    return status, body, {"Content-Type": "application/json", "Wechatpay-Serial": PUB_KEY_ID,
                          "Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce,
                          "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
                          "Wechatpay-Signature": protocol3.sign(WECHATPAY_KEY, protocol3.answer_message(stamp, nonce, body))}


def v3_client(fake, tmp_path, **overrides):
    return WeChatClientV3(Config.from_values(v3_values(tmp_path, fake.url, **overrides)))


@pytest.mark.gen_test
async def test_v3_downloads_the_file_tradebill_names_and_checks_its_sha1(fake, tmp_path):
    plain = text(PAYMENT_ROW, REFUND_ROW, summary="`2,`0.01,`0.01,`0.00,`0.00000,`0.01,`0.01").encode()
    fake.answers["/v3/bill/tradebill"] = signed(200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(plain).hexdigest(),
                                                      "download_url": fake.url + "/v3/billdownload/file?token=t1"})
    fake.answers["/v3/billdownload/file"] = (200, gzip.compress(plain), {})
    client = v3_client(fake, tmp_path)
    try:
        rows = await client.download_bill(DAY)
        assert [r.kind for r in rows] == ["payment", "refund"]
        tradebill, download = fake.requests[-2:]
        assert tradebill.uri == "/v3/bill/tradebill?bill_date=2021-01-28&bill_type=ALL&tar_type=GZIP"
        assert download.uri == "/v3/billdownload/file?token=t1"
        assert download.headers["Authorization"].startswith("WECHATPAY2-SHA256-RSA2048 ")
        fake.answers["/v3/billdownload/file"] = (200, gzip.compress(plain + b"\r\n"), {})
        with pytest.raises(bill.BillError, match="SHA1"):
            await client.download_bill(DAY)
    finally:
        client.close()


@pytest.mark.gen_test
async def test_v3_refuses_an_unsigned_answer_a_foreign_download_url_and_maps_no_statement(fake, tmp_path):
    client = v3_client(fake, tmp_path)
    try:
        good = {"hash_type": "SHA1", "hash_value": "0" * 40, "download_url": fake.url + "/v3/billdownload/file"}
        fake.answers["/v3/bill/tradebill"] = (200, json.dumps(good), {"Content-Type": "application/json"})
        with pytest.raises(UpstreamError, match="not trusted"):
            await client.download_bill(DAY)
        fake.answers["/v3/bill/tradebill"] = signed(200, dict(good, download_url="https://evil.example/file"))
        with pytest.raises(UpstreamError, match="not on"):
            await client.download_bill(DAY)
        for code, empty_day in (("NO_STATEMENT_EXIST", True), ("STATEMENT_CREATING", False)):
            fake.answers["/v3/bill/tradebill"] = signed(400, {"code": code, "message": "账单不存在"})
            with pytest.raises(bill.BillNotReady) as info:
                await client.download_bill(DAY)
            assert (info.value.wechat_code, info.value.empty_day) == (code, empty_day)
    finally:
        client.close()


@pytest.mark.gen_test
async def test_a_bill_over_the_bound_on_the_wire_says_so(fake, tmp_path):
    """Not "cannot reach WeChat": the answer came, and was larger than BILL_MAX_BYTES."""
    fake.answers["/pay/downloadbill"] = (200, b"x" * 5000, {})
    client = v2_client(fake, bill_max_bytes=2048)
    try:
        with pytest.raises(bill.BillError, match="over 2048 bytes.*BILL_MAX_BYTES"):
            await client.download_bill(DAY)
    finally:
        client.close()
    plain = text(PAYMENT_ROW).encode()
    fake.answers["/v3/bill/tradebill"] = signed(200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(plain).hexdigest(),
                                                      "download_url": fake.url + "/v3/billdownload/file"})
    fake.answers["/v3/billdownload/file"] = (200, b"x" * 5000, {})
    client = v3_client(fake, tmp_path, bill_max_bytes="2048")
    try:
        with pytest.raises(bill.BillError, match="over 2048 bytes.*BILL_MAX_BYTES"):
            await client.download_bill(DAY)
    finally:
        client.close()


def test_a_comma_in_a_field_moves_no_column():
    # 商品名称 and 商户数据包 are the merchant's free text, written as they are (no quotes): only
    # the backquote that starts every detail field tells where the next one begins
    row = PAYMENT_ROW.replace("`for testing", "`tea, green").replace("`cipher code", "`a,b,c")
    assert bill.parse(text(row)) == bill.parse(text(PAYMENT_ROW))


def test_a_bill_cut_short_before_its_summary_is_refused():
    # a file cut at a line's end is still CSV: only the summary tells that rows are missing
    cut = "\r\n".join([HEADER, PAYMENT_ROW, REFUND_ROW]) + "\r\n"
    with pytest.raises(bill.BillError, match="summary"):
        bill.parse(cut)
    with pytest.raises(bill.BillError, match="summary"):
        bill.parse(cut + SUMMARY + "\r\n")


@pytest.mark.gen_test
async def test_the_bill_is_read_off_the_ioloop(fake, monkeypatch):
    # a bill of 64 MiB (some 200 000 rows) takes seconds to read: not on the thread serving requests
    import threading
    readers, parse = [], bill.parse
    monkeypatch.setattr(bill, "parse", lambda data: readers.append(threading.get_ident()) or parse(data))
    fake.answers["/pay/downloadbill"] = (200, gzip.compress(text(PAYMENT_ROW).encode()), {})
    client = v2_client(fake)
    try:
        assert len(await client.download_bill(DAY)) == 1
    finally:
        client.close()
    assert len(readers) == 1 and readers[0] != threading.get_ident()
