"""A proxy in front of the simulator that spoils its API v3 answers in ways the simulator never
answers: no signature on a verified answer, a stale timestamp (signed again, genuinely), a serial
that names no key, no or another Wechatpay-Signature-Type, and a gateway's error (an unsigned 4xx,
a 5xx carrying a JSON code). The simulator signs every answer to a verified request with its
current key (its bad_sign fault: with a wrong key), so only this proves the v3 client refuses
those answers (or, without a Signature-Type, takes it as RSA). Requests and every other answer
pass through unchanged; WeChat's side of the exchange is the simulator's."""
import pytest
import tornado.httpclient
import tornado.web

from simulator.v3 import wire as protocol3

UNKNOWN_SERIAL = "PUB_KEY_ID_0000000000000000000000000000UNKNOWN"
_HOP = ("host", "content-length", "connection", "transfer-encoding")


class Tamper:
    """The proxy's faults; `app()` serves it, forwarding to target (the simulator's URL).
    keys: Wechatpay-Serial -> WeChat's private key, to sign a stale answer again."""

    def __init__(self, target, keys):
        self.target, self.keys = target, keys
        self.faults = []          # dicts, consumed in order by the paths they name

    def fault(self, path, kind, count=1, **options):
        """The next `count` answers on paths containing `path`: kind error (status, code,
        signed=True: the simulator answers code as WeChat would, here with that status),
        unsigned, stale, unknown_serial, untyped (no Wechatpay-Signature-Type), sm2 (another
        signature type)."""
        self.faults.append(dict(options, path=path, kind=kind, count=count))

    def take(self, path):
        for fault in self.faults:
            if fault["path"] in path and fault["count"] > 0:
                fault["count"] -= 1
                return fault
        return None

    def app(self):
        return tornado.web.Application([(r"/.*", _Proxy, {"tamper": self})])

    def spoil(self, kind, headers, body):
        """The answer's Wechatpay-* headers as the fault kind has them."""
        if kind == "unsigned":
            return {}
        if kind == "stale":
            key = self.keys[headers["Wechatpay-Serial"]]
            timestamp = str(int(headers["Wechatpay-Timestamp"]) - 900)
            message = protocol3.answer_message(timestamp, headers["Wechatpay-Nonce"], body)
            return dict(headers, **{"Wechatpay-Timestamp": timestamp,
                                    "Wechatpay-Signature": protocol3.sign(key, message)})
        if kind == "unknown_serial":
            return dict(headers, **{"Wechatpay-Serial": UNKNOWN_SERIAL})
        if kind == "untyped":          # WeChat's documented example answer has none
            return {k: v for k, v in headers.items() if k != "Wechatpay-Signature-Type"}
        if kind == "sm2":
            return dict(headers, **{"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"})
        return headers


class _Proxy(tornado.web.RequestHandler):
    def initialize(self, tamper):
        self.tamper = tamper

    async def handle(self):
        request, tamper = self.request, self.tamper
        fault = tamper.take(request.path)
        kind = fault and fault["kind"]
        headers = {k: v for k, v in request.headers.get_all() if k.lower() not in _HOP}
        if kind == "error":           # the simulator's scenario header: WeChat's answer of that code
            headers["Wechatpay-Negative-Test"] = fault["code"]
        answer = await tornado.httpclient.AsyncHTTPClient().fetch(
            tamper.target + request.uri, method=request.method, headers=headers, raise_error=False,
            body=request.body if request.method == "POST" else None, follow_redirects=False)
        signed = {k: v for k, v in answer.headers.get_all() if k.startswith("Wechatpay-")}
        if kind == "error":
            self.set_status(fault["status"])
            signed = signed if fault.get("signed", True) else {}
        else:
            self.set_status(answer.code)
            signed = tamper.spoil(kind, signed, answer.body)
        for name, value in signed.items():
            self.set_header(name, value)
        if answer.code != 204:
            self.set_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.write(answer.body)
        self.finish()

    get = post = handle


@pytest.fixture
def wechat(sim3, io_loop):
    """The proxy in front of the in-process simulator (tests.support.server3.sim3), on its own
    port; .url, .sim."""
    import tornado.testing
    from tornado.httpserver import HTTPServer
    v3 = sim3.state.v3
    tamper = Tamper(sim3.url, {v3.public_key_id: v3.wechatpay_key, v3.platform_serial: v3.platform_key})
    sock, port = tornado.testing.bind_unused_port()
    server = HTTPServer(tamper.app())
    server.add_sockets([sock])
    tamper.url, tamper.sim = "http://127.0.0.1:%d" % port, sim3
    yield tamper
    server.stop()
