"""The bills downloaded by unmodified SDKs from one real run_simulator.py (v3 keys, so it
serves both versions): wechatpy's download_bill (v2) and wechatpayv3's trade_bill and
download_bill (v3, hash checked), after a Native payment of each version and the clock
moved past the day's end."""
import datetime
import gzip
import hashlib
import json
import uuid

import pytest
import requests
from wechatpayv3 import WeChatPay as WeChatPayV3, WeChatPayType
from wechatpy.pay import WeChatPay

from tests.support.sim import DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, simulator_process

pytestmark = pytest.mark.e2e
BEIJING = datetime.timezone(datetime.timedelta(hours=8))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bills") / "sim-v3"
    with simulator_process("v3 manifest", "--v3-dir", str(directory)) as proc:
        with open(directory / "v3.json", encoding="utf-8") as f:
            proc.manifest = json.load(f)
        yield proc


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def v2_sdk(sim):
    pay = WeChatPay(DEMO_APPID, DEMO_API_KEY, DEMO_MCH_ID, sandbox=False, timeout=5)
    pay.API_BASE_URL = sim.url + "/"
    pay._http.trust_env = False
    return pay


def v3_sdk(sim):
    """wechatpayv3 configured from the manifest, pointed at the simulator (_gate_way)."""
    m = sim.manifest
    with open(m["merchant_private_key_file"], encoding="utf-8") as f:
        private_key = f.read()
    with open(m["wechatpay_public_key_file"], encoding="utf-8") as f:
        public_key = f.read()
    pay = WeChatPayV3(wechatpay_type=WeChatPayType.NATIVE, mchid=m["mchid"],
                      private_key=private_key, cert_serial_no=m["merchant_serial_no"],
                      apiv3_key=m["apiv3_key"], appid=m["appid"],
                      notify_url="http://127.0.0.1:9/notify", public_key=public_key,
                      public_key_id=m["wechatpay_public_key_id"], timeout=(5, 10))
    pay._core._gate_way = sim.url
    return pay


@pytest.fixture(scope="module")
def day(sim):
    """A v2 and a v3 Native payment, then the clock moved past the end of their day."""
    http = session()
    v2 = v2_sdk(sim).order.create(trade_type="NATIVE", body="Tea", total_fee=1200,
                                  notify_url="http://127.0.0.1:9/notify", client_ip="127.0.0.1",
                                  product_id="tea", out_trade_no="B2" + uuid.uuid4().hex[:16])
    code, text = v3_sdk(sim).pay(description="Cake", out_trade_no="B3" + uuid.uuid4().hex[:16],
                                 amount={"total": 800})
    assert code == 200, text
    for code_url in (v2["code_url"], json.loads(text)["code_url"]):
        assert http.post(sim.url + "/sim/pay", json={"code_url": code_url},
                         timeout=5).status_code == 200
    now = http.get(sim.url + "/sim/clock", timeout=5).json()["now"]
    paid = datetime.datetime.fromtimestamp(now, BEIJING).date()
    end = datetime.datetime.combine(paid + datetime.timedelta(days=1), datetime.time(),
                                    BEIJING).timestamp()
    assert http.post(sim.url + "/sim/clock", json={"advance": end - now + 1},
                     timeout=5).status_code == 200
    return paid


def test_wechatpy_downloads_the_v2_bill(sim, day):
    text = v2_sdk(sim).tools.download_bill(day.strftime("%Y%m%d"))
    lines = text.split("\r\n")
    assert lines[0].startswith("交易时间,公众账号ID,商户号,")
    assert ",`NATIVE,`SUCCESS," in lines[1] and ",`NATIVE,`SUCCESS," in lines[2]
    assert lines[-2].split(",`")[:3] == ["`2", "20.00", "0.00"]


def test_wechatpayv3_applies_downloads_and_checks_the_hash(sim, day):
    pay = v3_sdk(sim)
    code, text = pay.trade_bill(day.isoformat())       # the SDK verified the answer's signature
    assert code == 200, text
    applied = json.loads(text)
    code, content = pay.download_bill(applied["download_url"])
    assert code == 200
    bill = gzip.decompress(content)
    assert hashlib.sha1(bill).hexdigest() == applied["hash_value"]
    assert bill.decode("utf-8") == session().get(sim.url + "/sim/bills/" + day.isoformat(),
                                                 timeout=5).text
    code, text = pay.fundflow_bill(day.isoformat())
    assert code == 200 and json.loads(text)["hash_type"] == "SHA1"
