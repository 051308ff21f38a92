"""The simulator's bills, in process: the format field by field against WeChat's documented
samples (vectors below, with their sources), v2 /pay/downloadbill (MD5, HMAC-SHA256, gzip,
every error), v3 tradebill / fundflowbill and download_url (signed, hash, expiry), the clock
rule, /sim/bills, and the two faults (lost notifications, a merchant-platform refund)."""
import datetime
import gzip
import hashlib
import json
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from tornado.httpclient import HTTPRequest

from simulator import bills
from simulator.app import make_app
from simulator.config import SimConfig
from simulator.models import BEIJING
from simulator.state import State
from simulator.v3 import keys as v3keys
from tests.support.sim import (DEMO_APPID, DEMO_MCH_ID, call, login, new_order, paid_order,
                               pay_params, post_xml, refund_fields, signed_xml, stop_simulator,
                               wait_for)
from tests.support.sim3 import APIV3_KEY, APPID, MCHID, v3_call, verify_answer

TIME_SCALE = 0.01
CRLF = "\r\n"
# WeChat's documented layouts, as real bills show them: WxJava's test vectors of real bills
# (https://github.com/binarywang/WxJava/blob/develop/weixin-java-pay/src/test/java/com/github/
# binarywang/wxpay/bean/result/WxPayBillResultTest.java), the v2 chapter
# https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_6 and v3
# https://pay.weixin.qq.com/doc/v3/merchant/4012556654 (示例文件).
DOC_ALL_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
                  "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
                  "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
                  "费率备注")
DOC_ALL_PAYMENT = ("`2019-07-25 08:35:41,`WWWW,`XXXXXXXX,`0,`,`XXXXXXXXXXXXX,`XXXXXXXXXX,"
                   "`XXXXXXXXXXX,`JSAPI,`SUCCESS,`PSBC_DEBIT,`CNY,`6.00,`0.00,`0,`0,`0.00,`0.00,"
                   "`,`,`XXXXXX,`XXXXXXX,`0.04000,`0.60%,`6.00,`0.00,`")
# a real refund row of a 2024 bill (xjryanse/logic Strings.php, 0.54% merchant rate)
DOC_ALL_REFUND = ("`2024-07-09 16:47:58,`wxe1696e7c7db8e7f4,`1579507281,`0,`,"
                  "`4200002166202406250324636876,`5617363390111199232,"
                  "`oVgfJ5d35c6iAXrRCnfhOGF9aHT8,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
                  "`50302709992024070991956632208,`5622435300878286848,`50.00,`0.00,`ORIGINAL,"
                  "`SUCCESS,`2024-06-28 18:30 客户付款,`{}`,`-0.27000,`0.54%,`0.00,`50.00,`")
DOC_SUCCESS_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,"
                      "交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,"
                      "手续费,费率,订单金额,费率备注")
DOC_REFUND_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,"
                     "交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,"
                     "微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
                     "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
DOC_SUMMARY_HEADER = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
# the fund-flow layout (v2 chapter=9_18's sample, the same as v3 fundflowbill's)
DOC_FUND_HEADER = ("记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),"
                   "账户结余(元),资金变更提交申请人,备注,业务凭证号")
DOC_FUND_SUMMARY_HEADER = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"


def fields(row):
    """A detail row's values; every one must start with the backquote."""
    parts = row.split(",`")
    assert parts[0].startswith("`"), row
    return [parts[0][1:]] + parts[1:]


def test_the_headers_are_wechats_documented_ones_in_order():
    assert bills.HEADERS["ALL"] == DOC_ALL_HEADER
    assert bills.HEADERS["SUCCESS"] == DOC_SUCCESS_HEADER
    assert bills.HEADERS["REFUND"] == DOC_REFUND_HEADER
    assert bills.SUMMARY_HEADER == DOC_SUMMARY_HEADER
    assert bills.FUND_HEADER == DOC_FUND_HEADER
    assert bills.FUND_SUMMARY_HEADER == DOC_FUND_SUMMARY_HEADER
    assert len(fields(DOC_ALL_PAYMENT)) == len(DOC_ALL_HEADER.split(",")) == 27
    assert len(fields(DOC_ALL_REFUND)) == 27


def test_amounts_and_the_fee_are_written_as_in_the_documented_rows():
    sample = dict(zip(DOC_ALL_HEADER.split(","), fields(DOC_ALL_PAYMENT)))
    assert bills.yuan(600) == sample["应结订单金额"] == sample["订单金额"] == "6.00"
    # 0.60% of 6.00 is 0.036: WeChat's 0.04000, rounded half up to the fen, five decimals
    assert bills.fee_yuan(bills.fee_of(600)) == sample["手续费"] == "0.04000"
    assert bills.FEE_RATE == sample["费率"]
    assert bills.fee_of(1) == 0 and bills.fee_of(83) == 0 and bills.fee_of(84) == 1
    refund = dict(zip(DOC_ALL_HEADER.split(","), fields(DOC_ALL_REFUND)))
    assert bills.fee_yuan(-27) == refund["手续费"] == "-0.27000"
    assert bills.yuan(5000) == refund["退款金额"] == refund["申请退款金额"]


def test_parse_day_takes_only_the_zero_padded_form():
    assert bills.parse_day("20240105", "%Y%m%d") == datetime.date(2024, 1, 5)
    for bad in ("2024015", "2024-01-05", "", "20241305", "2024010５"):
        with pytest.raises(bills.NoBill) as exc:
            bills.parse_day(bad, "%Y%m%d")
        assert exc.value.reason == "invalid_date"


def test_the_clock_rule_and_the_three_months_kept():
    now = datetime.datetime(2024, 5, 31, 9, 0, tzinfo=BEIJING).timestamp()
    bills.check_available(datetime.date(2024, 5, 30), now)
    bills.check_available(datetime.date(2024, 2, 29), now)
    for day, reason in ((datetime.date(2024, 5, 31), "not_ended"),
                        (datetime.date(2024, 6, 1), "future"),
                        (datetime.date(2024, 2, 28), "too_old")):
        with pytest.raises(bills.NoBill) as exc:
            bills.check_available(day, now)
        assert exc.value.reason == reason


# --- in process ----------------------------------------------------------------------------
@pytest.fixture
def v3_setup(v3_dir, v3_merchant):
    return v3keys.prepare(v3_dir, MCHID, APPID, APIV3_KEY, "public-key",
                          merchant_cert=v3_merchant.cert_file)


@pytest.fixture
def app(io_loop, v3_setup):
    state = State(SimConfig.demo(), time_scale=TIME_SCALE, v3=v3_setup)
    application = make_app(state, notify_timeout=1.0)
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


def today(app):
    return datetime.datetime.fromtimestamp(app.sim_state.clock.now(), BEIJING).date()


async def end_the_day(client, base, app):
    """Move the simulator's clock just past the end of today (Beijing); the day ended."""
    day = today(app)
    end = bills.bounds(day)[1]
    status, _ = await call(client, base + "/sim/clock", "POST",
                           {"advance": end - app.sim_state.clock.now() + 1})
    assert status == 200
    return day


def bill_request(day, sign_type="MD5", **extra):
    msg = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "b1ll",
           "bill_date": day.strftime("%Y%m%d") if isinstance(day, datetime.date) else day}
    msg.update(extra)
    return signed_xml(msg, sign_type=sign_type)


async def downloadbill(client, base, day, sign_type="MD5", **extra):
    resp = await client.fetch(HTTPRequest(base + "/pay/downloadbill", method="POST",
                                          body=bill_request(day, sign_type, **extra)),
                              raise_error=False)
    return resp


async def a_day_of_trades(client, base, app):
    """Paid P1 (100) refunded 30 by the shop (R1) and 10 by hand in the merchant platform;
    P2 (250) whose notifications are lost; U1 unpaid. Returns the day (ended)."""
    await paid_order(client, base, "P1")
    resp, data = await post_xml(client, base + "/secapi/pay/refund", refund_fields("R1"))
    assert data["result_code"] == "SUCCESS", data
    state = app.sim_state
    assert await wait_for(lambda: state.refunds[(DEMO_MCH_ID, "R1")].refund_status == "SUCCESS")
    status, data = await call(client, base + "/sim/orders/P1/refunds", "POST",
                              {"refund_fee": 10, "out_refund_no": "BYHAND1"})
    assert status == 201 and data["refund_status"] == "SUCCESS", data
    prepay_id, _ = await new_order(client, base, "P2", total_fee="250")
    status, data = await call(client, base + "/sim/orders/P2/notifications", "POST",
                              {"deliver": False})
    assert status == 200 and data["deliver"] is False
    status, _ = await call(client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 200
    await new_order(client, base, "U1")
    return await end_the_day(client, base, app)


@pytest.mark.gen_test
async def test_v2_bill_of_a_day_row_by_row(http_client, base, app):
    day = await a_day_of_trades(http_client, base, app)
    resp = await downloadbill(http_client, base, day)
    text = resp.body.decode("utf-8")
    assert resp.code == 200 and text.endswith(CRLF) and "\n" not in text.replace(CRLF, "")
    lines = text.split(CRLF)[:-1]
    assert lines[0] == DOC_ALL_HEADER and lines[-2] == DOC_SUMMARY_HEADER
    rows = [dict(zip(DOC_ALL_HEADER.split(","), fields(line))) for line in lines[1:-2]]
    by = {(r["商户订单号"], r["商户退款单号"]): r for r in rows}
    assert sorted(by) == [("P1", "0"), ("P1", "BYHAND1"), ("P1", "R1"), ("P2", "0")]
    p1, p2 = by[("P1", "0")], by[("P2", "0")]
    order = app.sim_state.orders[(DEMO_MCH_ID, "P1")]
    assert (p1["交易状态"], p1["微信订单号"], p1["公众账号ID"], p1["商户号"]) == (
        "SUCCESS", order.transaction_id, DEMO_APPID, DEMO_MCH_ID)
    assert (p1["特约商户号"], p1["交易类型"], p1["货币种类"], p1["用户标识"]) == (
        "0", "JSAPI", "CNY", order.openid)
    assert (p1["应结订单金额"], p1["订单金额"], p1["手续费"], p1["费率"]) == (
        "1.00", "1.00", "0.01000", "0.60%")
    assert [p1[k] for k in ("微信退款单号", "退款金额", "退款类型", "退款状态", "申请退款金额")] == [
        "0", "0.00", "", "", "0.00"]
    assert (p2["应结订单金额"], p2["手续费"]) == ("2.50", "0.02000")     # 1.5 fen -> 2
    r1 = by[("P1", "R1")]
    refund = app.sim_state.refunds[(DEMO_MCH_ID, "R1")]
    assert [r1[k] for k in ("交易状态", "微信退款单号", "退款金额", "退款类型", "退款状态",
                            "应结订单金额", "订单金额", "申请退款金额", "手续费")] == [
        "REFUND", refund.refund_id, "0.30", "ORIGINAL", "SUCCESS", "0.00", "0.00", "0.30",
        "0.00000"]
    assert by[("P1", "BYHAND1")]["退款金额"] == "0.10"
    summary = fields(lines[-1])
    assert summary == ["4", "3.50", "0.40", "0.00", "0.03000", "3.50", "0.40"]


@pytest.mark.gen_test
async def test_v2_types_sign_types_and_gzip(http_client, base, app):
    day = await a_day_of_trades(http_client, base, app)
    plain = (await downloadbill(http_client, base, day)).body
    hmac = await downloadbill(http_client, base, day, "HMAC-SHA256", tar_type="GZIP")
    assert hmac.code == 200 and gzip.decompress(hmac.body) == plain
    success = (await downloadbill(http_client, base, day, bill_type="SUCCESS")).body.decode()
    assert success.split(CRLF)[0] == DOC_SUCCESS_HEADER
    assert len(success.split(CRLF)) == 1 + 2 + 2 + 1 and ",`REFUND," not in success
    refund = (await downloadbill(http_client, base, day, bill_type="REFUND")).body.decode()
    lines = refund.split(CRLF)
    assert lines[0] == DOC_REFUND_HEADER and len(lines) == 1 + 2 + 2 + 1
    row = dict(zip(DOC_REFUND_HEADER.split(","), fields(lines[1])))
    assert row["退款申请时间"] == row["交易时间"] and row["退款成功时间"] >= row["退款申请时间"]
    assert fields(lines[-2]) == ["2", "0.00", "0.40", "0.00", "0.00000", "0.00", "0.40"]
    text = await call_text(http_client, base + "/sim/bills/%s" % day.isoformat())
    assert text.encode("utf-8") == plain


async def call_text(client, url):
    resp = await client.fetch(url, raise_error=False)
    assert resp.code == 200, resp.body
    return resp.body.decode("utf-8")


@pytest.mark.gen_test
async def test_v2_errors(http_client, base, app):
    day = today(app)
    await paid_order(http_client, base, "P1")
    cases = [(day, {}, "No Bill Exist", "20002"),                     # the day has not ended
             (day - datetime.timedelta(days=1), {}, "No Bill Exist", "20002"),   # no trades
             (day + datetime.timedelta(days=1), {}, "invalid bill_date", "20001"),
             (day - datetime.timedelta(days=100), {}, "invalid bill_date", "20001"),
             (day.isoformat(), {}, "invalid bill_date", "20001"),
             (day, {"bill_type": "PAID"}, "invalid bill_type", "20001"),
             (day, {"tar_type": "ZIP"}, "invalid tar_type", "20001")]
    for bill_date, extra, msg, code in cases:
        resp = await downloadbill(http_client, base, bill_date, **extra)
        data = parse(resp)
        assert (data["return_code"], data["return_msg"], data["error_code"]) == (
            "FAIL", msg, code), (bill_date, extra, data)
    bad = bill_request(day).replace(b"<sign><![CDATA[", b"<sign><![CDATA[0")
    resp = await http_client.fetch(HTTPRequest(base + "/pay/downloadbill", method="POST",
                                               body=bad), raise_error=False)
    assert parse(resp)["return_code"] == "FAIL"
    await end_the_day(http_client, base, app)
    assert (await downloadbill(http_client, base, day)).code == 200


def parse(resp):
    from simulator.v2 import wire
    return wire.parse_xml(resp.body)


@pytest.mark.gen_test
async def test_the_faults_lost_notification_and_platform_refund(http_client, base, app):
    day = await a_day_of_trades(http_client, base, app)
    status, data = await call(http_client, base + "/sim/notifications?out_trade_no=P2")
    assert [n["outcome"] for n in data["notifications"]] == ["lost"]
    assert not app.sim_state.orders[(DEMO_MCH_ID, "P2")].notify_delivered
    refund = app.sim_state.refunds[(DEMO_MCH_ID, "BYHAND1")]
    assert (refund.request_source, refund.notify_url) == ("VENDOR_PLATFORM", "")
    bad = [({"refund_fee": 0}, 400), ({"refund_fee": "5"}, 400), ({"refund_fee": 1.5}, 400),
           ({"refund_fee": 61}, 409), ({"refund_fee": 1, "out_refund_no": "R1"}, 409),
           ({"refund_fee": 1, "notify_url": "ftp://x"}, 400)]
    for body, expected in bad:
        status, data = await call(http_client, base + "/sim/orders/P1/refunds", "POST", body)
        assert status == expected and "error" in data, (body, data)
    status, _ = await call(http_client, base + "/sim/orders/U1/refunds", "POST",
                           {"refund_fee": 1})
    assert status == 409
    status, data = await call(http_client, base + "/sim/orders/P1/notifications", "POST",
                              {"deliver": "no"})
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"
    assert len(app.sim_state.refunds) == 2      # nothing changed by the refused calls
    status, data = await call(http_client, base + "/sim/bills/%s" % today(app).isoformat())
    assert status == 404 and data["error"]["code"] == "NO_BILL"
    status, data = await call(http_client, base + "/sim/bills/2024-13-01")
    assert status == 400 and data["error"]["code"] == "BAD_FIELD"
    status, data = await call(http_client, base + "/sim/bills/%s?bill_type=X" % day)
    assert status == 400


# --- v3 ------------------------------------------------------------------------------------
def wechat_key(v3_setup):
    keys = v3_setup.public_json()
    return serialization.load_pem_public_key(keys["wechatpay_public_key"].encode())


@pytest.mark.gen_test
async def test_v3_tradebill_hash_and_download(http_client, base, app, v3_merchant, v3_setup):
    day = await a_day_of_trades(http_client, base, app)
    url = "/v3/bill/tradebill?bill_date=%s&bill_type=ALL&tar_type=GZIP" % day.isoformat()
    status, headers, text = await v3_call(http_client, base, v3_merchant, "GET", url)
    assert status == 200 and verify_answer(headers, text, wechat_key(v3_setup)), text
    data = json.loads(text)
    assert data["hash_type"] == "SHA1"
    download = urllib.parse.urlsplit(data["download_url"])
    assert download.path == "/v3/billdownload/file"
    path = download.path + "?" + download.query
    resp = await http_client.fetch(HTTPRequest(base + path, headers=signed_get(v3_merchant,
                                                                                path)))
    assert resp.code == 200 and "Wechatpay-Signature" not in resp.headers
    bill = gzip.decompress(resp.body)
    assert hashlib.sha1(bill).hexdigest() == data["hash_value"]
    plain = await call_text(http_client, base + "/sim/bills/%s" % day.isoformat())
    assert bill.decode("utf-8") == plain            # v3's trade bill is v2's CSV
    await call(http_client, base + "/sim/clock", "POST", {"advance": 301})
    status, _, text = await v3_call(http_client, base, v3_merchant, "GET", path)
    assert status == 400 and json.loads(text)["code"] == "INVALID_REQUEST"


def signed_get(merchant, path):
    from tests.support.sim3 import authorization
    return {"Accept": "application/json", "Authorization": authorization(merchant, "GET", path)}


@pytest.mark.gen_test
async def test_v3_fundflowbill(http_client, base, app, v3_merchant):
    day = await a_day_of_trades(http_client, base, app)
    url = "/v3/bill/fundflowbill?bill_date=%s" % day.isoformat()
    status, _, text = await v3_call(http_client, base, v3_merchant, "GET", url)
    assert status == 200, text
    path = urllib.parse.urlsplit(json.loads(text)["download_url"])
    path = path.path + "?" + path.query
    _, _, bill = await v3_call(http_client, base, v3_merchant, "GET", path)
    assert hashlib.sha1(bill.encode()).hexdigest() == json.loads(text)["hash_value"]
    lines = bill.split(CRLF)
    assert lines[0] == DOC_FUND_HEADER and lines[-3] == DOC_FUND_SUMMARY_HEADER
    rows = [dict(zip(DOC_FUND_HEADER.split(","), fields(line))) for line in lines[1:-3]]
    kinds = [(r["业务类型"], r["收支类型"], r["收支金额(元)"], r["业务凭证号"]) for r in rows]
    assert kinds == [("交易", "收入", "1.00", "P1"), ("扣除交易手续费", "支出", "0.01", "P1"),
                     ("退款", "支出", "0.30", "R1"), ("退款", "支出", "0.10", "BYHAND1"),
                     ("交易", "收入", "2.50", "P2"), ("扣除交易手续费", "支出", "0.02", "P2")]
    assert rows[-1]["账户结余(元)"] == "3.07"
    assert fields(lines[-2]) == ["6", "2", "3.50", "4", "0.43"]


@pytest.mark.gen_test
async def test_v3_errors(http_client, base, app, v3_merchant):
    day = today(app)
    await paid_order(http_client, base, "P1")
    cases = [("bill_date=%s" % day, 400, "STATEMENT_CREATING"),
             ("bill_date=%s" % (day - datetime.timedelta(days=1)), 400, "NO_STATEMENT_EXIST"),
             ("bill_date=%s" % (day + datetime.timedelta(days=1)), 400, "INVALID_REQUEST"),
             ("bill_date=%s" % (day - datetime.timedelta(days=100)), 400, "INVALID_REQUEST"),
             ("bill_date=%s" % day.strftime("%Y%m%d"), 400, "PARAM_ERROR"),
             ("bill_type=ALL", 400, "PARAM_ERROR"),
             ("bill_date=%s&bill_type=PAID" % day, 400, "PARAM_ERROR"),
             ("bill_date=%s&tar_type=ZIP" % day, 400, "PARAM_ERROR")]
    for query, status, code in cases:
        got, _, text = await v3_call(http_client, base, v3_merchant, "GET",
                                     "/v3/bill/tradebill?" + query)
        assert (got, json.loads(text)["code"]) == (status, code), (query, text)
    got, _, text = await v3_call(http_client, base, v3_merchant, "GET",
                                 "/v3/bill/fundflowbill?bill_date=%s&account_type=FEES" % day)
    assert json.loads(text)["code"] in ("NO_STATEMENT_EXIST", "STATEMENT_CREATING")
    got, _, text = await v3_call(http_client, base, v3_merchant, "GET",
                                 "/v3/billdownload/file?token=nope")
    assert (got, json.loads(text)["code"]) == (400, "INVALID_REQUEST")
    resp = await http_client.fetch(HTTPRequest(base + "/v3/bill/tradebill?bill_date=%s" % day,
                                               headers={"Accept": "application/json"}),
                                   raise_error=False)
    assert resp.code == 401 and json.loads(resp.body)["code"] == "SIGN_ERROR"
