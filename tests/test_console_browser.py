"""The simulator's console in headless Chromium, against real run_simulator.py and run_server.py
processes: what a developer sees and clicks.

Needs Debian's Chromium (/usr/bin/chromium, or CHROMIUM=path) and Playwright for Python (no
browser download: Playwright drives that Chromium). Without them the tests are skipped with
one line locally, and fail in CI (CI set). UPDATE_SCREENSHOTS=1 writes docs/console.md's
screenshots (docs/console-*.png) from these runs. Every page is 1280x800, a laptop's screen.
"""
import json
import os
import re
import time

import pytest
import requests

from server.wechat.v2 import wire as wxpay
from tests.support import ADMIN_TOKEN, DEMO
from tests.support.processes import ROOT, Proc, free_port
from tests.support.shop import backend_env

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# quiet on a machine without outside network; a root user needs --no-sandbox
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.path.join(ROOT, "docs")
LAPTOP = {"width": 1280, "height": 800}
# a second merchant beside the demo's: two merchants may use one order number
OTHER = {"mch_id": "10000200", "api_key": "b" * 32}


def unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail("browser tests cannot run in CI: " + reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("Playwright for Python is not installed (%s)" % exc)
    if not os.path.exists(CHROMIUM):
        unavailable("no Chromium at %s (apt-get install chromium)" % CHROMIUM)
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        except Exception as exc:  # the binary is there but does not start
            unavailable("Chromium did not start: %s" % str(exc).splitlines()[0])
        yield chromium
        chromium.close()


class Processes:
    """A simulator process and a backend process wired to it (one pair for the module)."""

    def __init__(self, tmp_path):
        sim_port, port = free_port(), free_port()
        self.v3_dir = tmp_path / "sim-v3"
        config = tmp_path / "merchants.json"
        config.write_text(json.dumps({
            "apps": [{"appid": DEMO["appid"], "secret": DEMO["app_secret"]}],
            "merchants": [dict(mch_id=DEMO["mch_id"], api_key=DEMO["api_key"], appids=[DEMO["appid"]]),
                          dict(OTHER, appids=[DEMO["appid"]])]}))
        self.sim = Proc("run_simulator.py", ["--port", str(sim_port), "--time-scale", "0.01", "--config",
                                             str(config), "--v3-dir", str(self.v3_dir)], port=sim_port)
        env = dict(backend_env(self.sim.url, port, "MD5"), DATABASE_URL="sqlite:///%s" % (tmp_path / "c.db"),
                   SWEEP_INTERVAL="0", ADMIN_TOKEN=ADMIN_TOKEN)
        self.backend = Proc("run_server.py", ["--port", str(port)], env=env, port=port)

    def stop(self):
        self.backend.stop()
        self.sim.stop()


@pytest.fixture(scope="module")
def processes(tmp_path_factory, browser):
    p = Processes(tmp_path_factory.mktemp("console"))
    yield p
    p.stop()


class Shop:
    """The processes, seen by the backend's API and by a console page open on the simulator."""

    def __init__(self, processes, browser, path="/sim/console?poll=200", events=None):
        self.sim, self.backend = processes.sim, processes.backend
        # each test starts without faults, and with only its own orders, requests and notifications
        # on the page (the module's simulator would otherwise pile up every earlier test's)
        requests.post(self.sim.url + "/sim/reset", timeout=5).raise_for_status()
        self.context = browser.new_context(viewport=LAPTOP)
        if events:      # what answers the page's GET /sim/console/events instead
            self.context.route("**/sim/console/events", events)
        self.page = self.context.new_page()
        self.page.goto(self.sim.url + path)     # polled 5 times a second if the push fails

    def close(self):
        self.context.close()

    def code(self, user):
        return requests.post(self.sim.url + "/sim/login", json={"appid": DEMO["appid"], "user": user},
                             timeout=5).json()["code"]

    def login(self, user="console-user"):
        r = requests.post(self.backend.url + "/api/login", json={"code": self.code(user)}, timeout=10)
        assert r.status_code == 200, r.text
        return {"Authorization": "Bearer " + r.json()["token"]}

    def order(self, auth, product="coffee"):
        return requests.post(self.backend.url + "/api/orders", json={"product_id": product}, headers=auth,
                             timeout=10)

    def backend_status(self, auth, no):
        return requests.get(self.backend.url + "/api/orders/%s?refresh=1" % no, headers=auth,
                            timeout=10).json()["status"]

    def screenshot(self, name, at=None):
        """docs/console-<name>.png: the 1280x800 screen, scrolled to `at` (a selector)."""
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            os.makedirs(SCREENSHOTS, exist_ok=True)
            if at:
                self.page.locator(at).first.evaluate("node => node.scrollIntoView()")
            self.page.screenshot(path=os.path.join(SCREENSHOTS, "console-%s.png" % name))
            self.page.evaluate("window.scrollTo(0, 0)")

    def refund(self, no, fee, out_refund_no):
        headers = {"Authorization": "Bearer " + ADMIN_TOKEN, "Idempotency-Key": out_refund_no}
        return requests.post(self.backend.url + "/admin/orders/%s/refunds" % no, headers=headers,
                             json={"refund_fee": fee, "out_refund_no": out_refund_no}, timeout=10)


@pytest.fixture
def shop(processes, browser):
    s = Shop(processes, browser)
    yield s
    s.close()


def wait_until(check, what, timeout=10):
    import time
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out: " + what
        time.sleep(0.05)


def test_pay_from_the_console_and_the_backend_reports_success(shop):
    from playwright.sync_api import expect
    auth = shop.login()
    no = shop.order(auth).json()["out_trade_no"]
    row = shop.page.locator('#orders tr[data-order="%s"]' % no)
    expect(row.locator(".state")).to_have_text("NOTPAY", timeout=10000)
    row.locator('button[data-action="pay"]').click()
    expect(row.locator(".state")).to_have_text("SUCCESS", timeout=10000)
    wait_until(lambda: shop.backend_status(auth, no) == "SUCCESS", "the backend to record the payment")
    expect(shop.page.locator('#notifications tr[data-notification][data-order="%s"]' % no).first).to_be_visible(
        timeout=10000)
    shop.screenshot("paid")


def v2_order(sim, no, trade_type="NATIVE", merchant=None, **fields):
    """A v2 unifiedorder signed with the merchant's key (the demo's by default)."""
    merchant = merchant or {"mch_id": DEMO["mch_id"], "api_key": DEMO["api_key"]}
    fields.update(appid=DEMO["appid"], mch_id=merchant["mch_id"], nonce_str="console", body="Coffee",
                  out_trade_no=no, total_fee="100", spbill_create_ip="127.0.0.1",
                  notify_url="http://127.0.0.1:9/notify", trade_type=trade_type)
    r = requests.post(sim.url + "/pay/unifiedorder", data=wxpay.signed_xml(fields, merchant["api_key"]),
                      timeout=5)
    assert wxpay.from_xml(r.content)["result_code"] == "SUCCESS", r.text


def test_the_console_pays_native_app_and_h5_orders(shop):
    from playwright.sync_api import expect
    extra = {"NATIVE": {"product_id": "coffee"}, "APP": {},
             "MWEB": {"scene_info": '{"h5_info": {"type": "Wap"}}'}}
    for trade_type, fields in extra.items():
        no = "CONSOLE%s%d" % (trade_type, os.getpid())
        v2_order(shop.sim, no, trade_type, **fields)
        row = shop.page.locator('#orders tr[data-order="%s"]' % no)
        expect(row.locator(".state")).to_have_text("NOTPAY", timeout=10000)
        row.locator('button[data-action="pay"]').click()
        expect(row.locator(".state")).to_have_text("SUCCESS", timeout=10000)


def v3_sdk(processes, wechatpay_type):
    """wechatpayv3 configured from the simulator's v3 manifest (public-key mode), pointed at it."""
    from wechatpayv3 import WeChatPay
    with open(processes.v3_dir / "v3.json", encoding="utf-8") as f:
        m = json.load(f)
    with open(m["merchant_private_key_file"], encoding="utf-8") as f:
        private_key = f.read()
    with open(m["wechatpay_public_key_file"], encoding="utf-8") as f:
        public_key = f.read()
    pay = WeChatPay(wechatpay_type=wechatpay_type, mchid=m["mchid"], private_key=private_key,
                    cert_serial_no=m["merchant_serial_no"], apiv3_key=m["apiv3_key"],
                    appid=m["appid"], notify_url="http://127.0.0.1:9/notify", timeout=(5, 10),
                    public_key=public_key, public_key_id=m["wechatpay_public_key_id"])
    pay._core._gate_way = processes.sim.url
    return pay


def test_pay_v3_native_app_and_h5_orders_from_the_console(shop, processes):
    from playwright.sync_api import expect
    from wechatpayv3 import WeChatPayType
    scene = {"payer_client_ip": "203.0.113.7", "h5_info": {"type": "Wap"}}
    for kind, trade_type in ((WeChatPayType.NATIVE, "NATIVE"), (WeChatPayType.APP, "APP"),
                             (WeChatPayType.H5, "MWEB")):
        pay, no = v3_sdk(processes, kind), "CONSOLE%s%d" % (trade_type, time.time_ns() % 10 ** 9)
        code, text = pay.pay(description="Coffee", out_trade_no=no, amount={"total": 100},
                             scene_info=scene if kind == WeChatPayType.H5 else None)
        assert code == 200, text
        row = shop.page.locator('#orders tr[data-order="%s"]' % no)
        row.locator('button[data-action="pay"]').click(timeout=10000)
        expect(row.locator(".state")).to_have_text("SUCCESS", timeout=10000)
        code, text = pay.query(out_trade_no=no)
        assert (json.loads(text)["trade_state"], json.loads(text)["trade_type"]) == (
            "SUCCESS", trade_type)


def test_cancel_and_fail_from_the_console(shop):
    from playwright.sync_api import expect
    auth = shop.login()
    cancelled = shop.order(auth).json()["out_trade_no"]
    failed = shop.order(auth, "tea").json()["out_trade_no"]
    shop.page.locator('#orders tr[data-order="%s"] button[data-action="cancel"]' % cancelled).click()
    shop.page.locator('#orders tr[data-order="%s"] button[data-action="fail"]' % failed).click()
    expect(shop.page.locator('#orders tr[data-order="%s"] .state' % failed)).to_have_text("PAYERROR", timeout=10000)
    assert shop.backend_status(auth, failed) == "PAYERROR"
    assert shop.backend_status(auth, cancelled) == "NOTPAY"


def test_a_request_signed_with_a_wrong_key_shows_its_explanation(shop):
    from playwright.sync_api import expect
    shop.login()  # an openid the simulator knows
    wrong_key = "0" * 32
    fields = {"appid": DEMO["appid"], "mch_id": DEMO["mch_id"], "nonce_str": "console", "body": "Coffee",
              "out_trade_no": "WRONGKEY1", "total_fee": "100", "spbill_create_ip": "127.0.0.1",
              "notify_url": "http://127.0.0.1:9/notify", "trade_type": "NATIVE", "product_id": "coffee"}
    r = requests.post(shop.sim.url + "/pay/unifiedorder", data=wxpay.signed_xml(fields, wrong_key), timeout=5)
    assert wxpay.from_xml(r.content)["return_code"] == "FAIL"
    row = shop.page.locator("#requests tr[data-request]", has_text="unifiedorder").first
    expect(row).to_be_visible(timeout=10000)
    explain = row.locator("button.explain")
    if explain.count():
        explain.click()
    explanation = shop.page.locator("#requests .explanation").first
    expect(explanation).to_be_visible(timeout=10000)
    text = explanation.inner_text()
    assert "out_trade_no=WRONGKEY1" in text                    # the string that was signed
    assert DEMO["api_key"] not in text and wrong_key not in text  # the key masked
    assert wxpay.sign(dict(fields), DEMO["api_key"]) in text     # the sign WeChat expected
    assert wxpay.sign(dict(fields), wrong_key) in text           # the one it got
    shop.screenshot("explanation", at="#requests tr.bad")


def test_resend_duplicate_shows_the_new_attempts(shop):
    from playwright.sync_api import expect
    auth = shop.login()
    no = shop.order(auth).json()["out_trade_no"]
    row = shop.page.locator('#orders tr[data-order="%s"]' % no)
    row.locator('button[data-action="pay"]').click()
    attempts = shop.page.locator('#notifications tr[data-notification][data-order="%s"]' % no)
    expect(attempts.first).to_be_visible(timeout=10000)
    wait_until(lambda: shop.backend_status(auth, no) == "SUCCESS", "paid")
    before = attempts.count()
    row.locator("details.menu summary").click()         # the row's menu holds the resends
    row.locator('button[data-resend="duplicate"]').click()
    wait_until(lambda: attempts.count() >= before + 2, "the duplicate attempts to show")
    assert shop.backend_status(auth, no) == "SUCCESS"


def test_a_fault_added_in_the_console_makes_the_next_order_fail_with_502(shop):
    from playwright.sync_api import expect
    auth = shop.login()
    form = shop.page.locator("form#fault-form")
    form.locator("select[name=path]").select_option("/pay/unifiedorder")
    form.locator("select[name=kind]").select_option("status")
    form.locator("input[name=value]").fill("500")
    form.locator("[type=submit]").click()
    expect(shop.page.locator("#faults tr[data-fault]")).to_have_count(1, timeout=10000)
    shop.screenshot("faults", at="#faults")
    r = shop.order(auth)
    assert r.status_code == 502 and r.json()["error"]["code"] == "UPSTREAM_ERROR"
    shop.page.locator("#faults tr[data-fault] button.delete").click()
    expect(shop.page.locator("#faults tr[data-fault]")).to_have_count(0, timeout=10000)
    assert shop.order(auth).status_code == 201


def test_the_console_masks_keys_and_loads_nothing_from_outside(shop):
    from playwright.sync_api import expect
    requested = []
    shop.page.on("request", lambda req: requested.append(req.url))
    shop.page.reload()
    expect(shop.page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10000)
    wait_until(lambda: any("/sim/console/state" in url for url in requested), "the page to poll")
    assert all(url.startswith(shop.sim.url) for url in requested), requested
    html = shop.page.content()
    assert DEMO["api_key"] not in html and DEMO["app_secret"] not in html
    assert DEMO["mch_id"] in shop.page.locator("#config").inner_text()


def test_advancing_the_clock_in_the_console_expires_a_login_code(shop):
    code = shop.code("clock-user")
    shop.page.locator("input#advance-seconds").fill("301")
    shop.page.locator("button#advance").click()
    wait_until(lambda: re.search(r"30[01]", shop.page.locator("#clock").inner_text()) is not None,
               "the clock to show the jump")
    r = requests.post(shop.backend.url + "/api/login", json={"code": code}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["wechat_code"] == 40029


def fits(page, sections=("orders", "notifications", "requests")):
    """Nothing scrolls sideways: neither the page nor any of the sections."""
    sizes = page.evaluate("""ids => [document.documentElement.scrollWidth,
        document.documentElement.clientWidth].concat(ids.map(id => {
            const s = document.getElementById(id); return s.scrollWidth - s.clientWidth; }))""",
                          list(sections))
    assert sizes[0] <= sizes[1] and sizes[2:] == [0] * len(sections), sizes


def v3_native_order(processes, no, total=388):
    pay = v3_sdk(processes, __import__("wechatpayv3").WeChatPayType.NATIVE)
    code, text = pay.pay(description="Coffee", out_trade_no=no, amount={"total": total})
    assert code == 200, text


def test_the_console_fits_1280_px_with_long_ids_and_v3_orders(shop, processes):
    from playwright.sync_api import expect
    auth = shop.login("a-rather-long-user-name-for-the-openid")
    v2 = shop.order(auth).json()["out_trade_no"]
    v3 = "LAYOUTV3NATIVE%018d" % (time.time_ns() % 10 ** 18)          # 32 characters, v3's most
    v3_native_order(processes, v3)
    requests.post(shop.sim.url + "/sim/orders/%s/phone" % v3, json={"result": "SUCCESS"}, timeout=10)
    row = shop.page.locator('#orders tr[data-order="%s"]' % v3)
    expect(row.locator(".state")).to_have_text("SUCCESS", timeout=10000)
    expect(shop.page.locator('#notifications tr[data-order="%s"]' % v3).first).to_be_visible(timeout=10000)
    fits(shop.page)
    # v3 and its kind shown like v2's; yuan and fen; the id shortened, whole in its title
    expect(row.locator(".badge.version-v3")).to_have_text("v3")
    expect(row.locator(".badge.trade-type")).to_have_text("NATIVE")
    expect(row.locator("td.amount")).to_have_text("¥3.88 (388 fen)")
    link = row.locator("a.order-link")
    expect(link).to_have_text(v3[:6] + "…" + v3[-4:])
    assert v3 in link.get_attribute("title")
    v2_row = shop.page.locator('#orders tr[data-order="%s"]' % v2)
    expect(v2_row.locator(".badge.version-v2")).to_have_text("v2")
    # every time in the one zone the header states
    expect(shop.page.locator("#zone")).to_contain_text("UTC+8")
    # the row's menu by keyboard: Enter opens it, Escape closes it
    summary = row.locator("details.menu summary")
    summary.focus()
    shop.page.keyboard.press("Enter")
    expect(row.locator('button[data-resend="wrong_serial"]')).to_be_visible()
    fits(shop.page)
    shop.screenshot("orders")
    shop.page.keyboard.press("Escape")
    expect(row.locator('button[data-resend="wrong_serial"]')).to_be_hidden()
    # a click on an id copies the whole id; a mark says so beside it
    shop.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=shop.sim.url)
    row.locator("button.copy-icon").click()
    expect(row.locator(".copied")).to_have_text("copied")
    assert shop.page.evaluate("navigator.clipboard.readText()") == v3


def test_the_filter_narrows_the_rows_and_a_reload_keeps_it(shop):
    from playwright.sync_api import expect
    auth = shop.login("filter-user")
    nos = [shop.order(auth).json()["out_trade_no"] for _ in range(2)]
    rows = shop.page.locator("#orders tr[data-order]:visible")
    expect(shop.page.locator('#orders tr[data-order="%s"]' % nos[1])).to_be_visible(timeout=10000)
    assert rows.count() >= 2
    shop.page.locator("#filter").fill(nos[0].lower())                    # any case
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-order", nos[0])
    requests_shown = shop.page.locator("#requests tr[data-request]:visible")
    assert "q=" + nos[0].lower() in shop.page.url
    shop.page.reload()
    expect(shop.page.locator("#filter")).to_have_value(nos[0].lower())
    expect(rows).to_have_count(1, timeout=10000)
    expect(shop.page.locator('#notifications tr[data-notification]:visible')).to_have_count(0)
    shop.page.locator("#filter").fill("/sns/jscode2session")            # a path
    expect(rows).to_have_count(0)
    expect(requests_shown.first).to_be_visible()
    assert all(r == "/sns/jscode2session" for r in requests_shown.evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-api'))"))
    shop.page.locator("#filter").fill("")
    assert "q=" not in shop.page.url


def test_the_order_page_of_a_paid_and_refunded_order(shop):
    from playwright.sync_api import expect
    auth = shop.login("order-page-user")
    order = shop.order(auth).json()
    no = order["out_trade_no"]
    paid = requests.post(shop.sim.url + "/sim/pay", json=order["payment"], timeout=10)
    assert paid.status_code == 200, paid.text
    wait_until(lambda: shop.backend_status(auth, no) == "SUCCESS", "the backend to record the payment")
    refund = shop.refund(no, 100, "RF" + no[-20:])
    assert refund.status_code in (200, 201, 202), refund.text
    shop.page.locator('#orders tr[data-order="%s"] a.order-link' % no).click(timeout=10000)
    expect(shop.page).to_have_url(re.compile("/sim/console/orders/" + no))
    expect(shop.page.locator("#order-no")).to_have_text(no)
    expect(shop.page.locator("#order-state")).to_have_text("REFUND", timeout=10000)
    req = shop.page.locator("#order-requests tr[data-request]")
    for path in ("/pay/unifiedorder", "/sim/pay", "/secapi/pay/refund"):
        expect(req.filter(has_text=path).first).to_be_visible()
    unified = req.filter(has_text="/pay/unifiedorder").first
    expect(unified.locator("pre.body-text").first).to_contain_text(no)        # the request body
    expect(unified.locator("pre.body-text").nth(1)).to_contain_text("prepay_id")   # the answer
    assert DEMO["api_key"] not in shop.page.content()
    attempt = shop.page.locator("#order-notifications tr[data-attempt]").first
    expect(attempt.locator(".outcome")).to_have_text("success", timeout=10000)
    expect(attempt.locator("td.exchange")).to_contain_text("return_code")    # the answer
    expect(attempt.locator("td.exchange")).to_contain_text(no)              # the body sent
    expect(shop.page.locator("#order-refunds [data-refund]")).to_have_attribute(
        "data-refund", "RF" + no[-20:])
    expect(shop.page.locator("#order-refunds")).to_contain_text("¥1.00 (100 fen)")
    fits(shop.page, ("summary", "order-requests", "order-notifications", "order-refunds"))
    shop.screenshot("order")


def test_an_order_number_two_merchants_use_links_to_each_ones_page(shop):
    from playwright.sync_api import expect
    no = "SAME%d" % (time.time_ns() % 10 ** 9)
    v2_order(shop.sim, no, product_id="coffee")
    v2_order(shop.sim, no, merchant=OTHER, product_id="coffee")
    for mch_id in (OTHER["mch_id"], DEMO["mch_id"]):
        shop.page.goto(shop.sim.url + "/sim/console?poll=200")
        shop.page.locator('#orders tr[data-order="%s"][data-mch="%s"] a.order-link' % (no, mch_id)).click(
            timeout=10000)
        expect(shop.page.locator("#order-no")).to_have_text(no)
        expect(shop.page.locator('#order-fields dd[data-field="merchant"]')).to_have_text(mch_id, timeout=10000)


def test_eight_console_tabs_in_one_browser_all_load_and_hear_pushes(processes, browser):
    """A browser opens at most 6 connections to a host: a stream per tab would starve the 7th."""
    from playwright.sync_api import expect
    context = browser.new_context(viewport=LAPTOP)
    try:
        pages = []
        for _ in range(8):
            page = context.new_page()
            page.goto(processes.sim.url + "/sim/console?poll=0", timeout=10000)     # push only
            expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10000)
            pages.append(page)
        pages.pop(0).close()        # the tab that may hold the stream goes; the others still hear
        v2_order(processes.sim, "TABS%d" % (time.time_ns() % 10 ** 9), product_id="coffee")
        for page in pages:
            expect(page.locator("#orders tr[data-order^=TABS]").first).to_be_visible(timeout=10000)
    finally:
        context.close()


def test_a_pushed_update_shows_with_polling_off(processes, browser):
    from playwright.sync_api import expect
    shop = Shop(processes, browser, "/sim/console?poll=0")        # push only: never polled
    try:
        expect(shop.page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10000)
        states = []
        shop.page.on("request", lambda req: states.append(req.url) if "/console/state" in req.url else None)
        no = shop.order(shop.login("push-user")).json()["out_trade_no"]
        expect(shop.page.locator('#orders tr[data-order="%s"]' % no)).to_be_visible(timeout=10000)
        assert states, "the page fetched the state after the push"
    finally:
        shop.close()


@pytest.mark.parametrize("refuse", ["404", "abort"])
def test_polling_takes_over_when_the_event_stream_fails(processes, browser, refuse):
    from playwright.sync_api import expect
    shop = Shop(processes, browser, events=lambda route: route.fulfill(status=404, body="no")
                if refuse == "404" else route.abort())
    try:
        connection = shop.page.locator("#connection")
        expect(connection).to_have_attribute("data-state", "polling", timeout=10000)
        expect(connection).to_contain_text("push unavailable")
        no = shop.order(shop.login("poll-user")).json()["out_trade_no"]
        expect(shop.page.locator('#orders tr[data-order="%s"]' % no)).to_be_visible(timeout=10000)
    finally:
        shop.close()


def test_the_bills_panel_shows_a_days_bill_once_it_has_ended(shop):
    """Last in the module: it moves the simulator's clock past the end of the day."""
    from playwright.sync_api import expect
    order = shop.order(shop.login("bill-user")).json()
    paid = requests.post(shop.sim.url + "/sim/pay", json=order["payment"], timeout=10)
    assert paid.status_code == 200, paid.text
    now = requests.get(shop.sim.url + "/sim/clock", timeout=5).json()["now"]
    day = time.strftime("%Y-%m-%d", time.gmtime(now + 8 * 3600))     # Beijing
    shop.page.locator("#bill-date").fill(day)
    expect(shop.page.locator("#bill-mch option")).to_have_count(2, timeout=10000)     # two merchants
    shop.page.locator("#bill-mch").select_option(DEMO["mch_id"])
    shop.page.locator("button#show-bill").click()
    expect(shop.page.locator("#bill-text")).to_contain_text("has not ended", timeout=10000)
    end = (now + 8 * 3600) // 86400 * 86400 + 86400 - 8 * 3600
    requests.post(shop.sim.url + "/sim/clock", json={"advance": end - now + 1}, timeout=5)
    shop.page.locator("button#show-bill").click()
    bill = shop.page.locator("#bill-text")
    expect(bill).to_contain_text("交易时间,公众账号ID,商户号", timeout=10000)
    expect(bill).to_contain_text("`" + order["out_trade_no"] + ",")
    assert shop.page.locator("#bill-link").get_attribute("href") == (
        "/sim/bills/%s?bill_type=ALL&mch_id=%s" % (day, DEMO["mch_id"]))
