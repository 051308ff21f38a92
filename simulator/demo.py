"""`run_simulator.py demo`: play a Mini Program against a running backend, step by step."""
import argparse
import os
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

import requests

STEPS = 6
DEFAULT_CA = os.path.join("sim-tls", "ca.pem")
PROBE_SECONDS = 1.0   # a TLS handshake with a local port takes milliseconds


class DemoFailed(Exception):
    pass


def build_parser():
    p = argparse.ArgumentParser(prog="run_simulator.py demo",
                                description="Play a Mini Program (login, order, pay) against a backend.")
    p.add_argument("--backend", default="http://127.0.0.1:8000", metavar="URL",
                   help="the backend's base URL (default %(default)s)")
    p.add_argument("--simulator", default="https://127.0.0.1:9000", metavar="URL",
                   help="the simulator's base URL (default %(default)s: run_server.py --simulator's)")
    p.add_argument("--ca-file", default=DEFAULT_CA,
                   help="CA certificate to trust for an https simulator (default: %(default)s, "
                        "written by run_server.py --simulator and run_simulator.py --tls)")
    p.add_argument("--appid", help="the Mini Program's appid (default: the simulator's first app)")
    p.add_argument("--user", default="demo-user", help="who plays the phone")
    p.add_argument("--product", help="product id (default: the first in the catalog)")
    p.add_argument("--quantity", type=int, default=1, help="how many of the product to order (default 1)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the notification")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def main(argv):
    args = parse_args(argv)
    http = requests.Session()
    if args.simulator.startswith("https:") and os.path.exists(args.ca_file):
        http.verify = args.ca_file
    try:
        run(args, http)
    except DemoFailed as exc:
        print("FAILED: %s" % exc, flush=True)
        return 1
    except requests.ConnectionError as exc:
        print("FAILED: %s" % unreachable(args, exc), flush=True)
        return 1
    except requests.RequestException as exc:
        print("FAILED: %s" % exc, flush=True)
        return 1
    print("OK: the order was paid and the backend recorded it.", flush=True)
    return 0


def run(args, http):
    sim, backend = args.simulator.rstrip("/"), args.backend.rstrip("/")
    appid = args.appid or call(http, "GET", sim + "/sim/config")["apps"][0]["appid"]
    code = call(http, "POST", sim + "/sim/login", json={"appid": appid, "user": args.user})["code"]
    step(1, "wx.login (simulator) gave a code for appid %s" % appid)
    token = call(http, "POST", backend + "/api/login", json={"code": code})["token"]
    step(2, "POST /api/login: the backend exchanged the code and issued a session token")
    auth = {"Authorization": "Bearer " + token}
    products = call(http, "GET", backend + "/api/products")["products"]
    product = args.product or products[0]["id"]
    order = call(http, "POST", backend + "/api/orders", headers=auth,
                 json={"product_id": product, "quantity": args.quantity}, expect=201)
    no = order["out_trade_no"]
    step(3, "POST /api/orders: order %s, %s x%d = %d fen, status %s" % (
        no, product, args.quantity, order["total_fee"], order["status"]))
    paid = call(http, "POST", sim + "/sim/pay", json=dict(order["payment"], appid=appid))
    step(4, "wx.requestPayment (simulator): %s, transaction %s" % (paid["errMsg"], paid["transaction_id"]))
    final = wait_paid(http, backend + "/api/orders/" + no, auth, args.timeout)
    step(5, "the backend received WeChat's notification: status %s" % final["status"])
    if final.get("transaction_id") != paid["transaction_id"]:
        raise DemoFailed("the backend recorded transaction %s, WeChat paid %s" % (
            final.get("transaction_id"), paid["transaction_id"]))
    step(6, "GET /api/orders/%s: SUCCESS, paid at %s" % (no, final.get("paid_at")))


def wait_paid(http, url, headers, timeout):
    deadline = time.monotonic() + timeout
    while True:
        order = call(http, "GET", url, headers=headers)
        if order["status"] == "SUCCESS":
            return order
        if order["status"] != "NOTPAY" or time.monotonic() > deadline:
            raise DemoFailed("order status %s after %.0f s" % (order["status"], timeout))
        time.sleep(0.2)


def call(http, method, url, expect=200, **kwargs):
    # per request: a session's verify loses to REQUESTS_CA_BUNDLE in the environment
    response = http.request(method, url, timeout=15, verify=http.verify, **kwargs)
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != expect or not isinstance(data, dict):
        raise DemoFailed("%s %s answered %d%s" % (method, url, response.status_code, refusal(data, response.text)))
    return data


def refusal(data, text):
    """The error an answer carries: the backend's code and whole message (its next step is at the end)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "message" in error:
        return " %s: %s" % (error.get("code"), str(error["message"])[:2000])
    return ": %s" % text[:300]


def unreachable(args, exc):
    """What a request that got no answer says: where it went, what answered there, the next step."""
    url = exc.request.url if exc.request is not None else args.simulator
    parts = urlsplit(url)
    base = "%s://%s" % (parts.scheme, parts.netloc)
    is_sim = url.startswith(args.simulator.rstrip("/") + "/")
    who, flag = ("the simulator", "--simulator") if is_sim else ("the backend", "--backend")
    where = "%s (%s; tried %s %s)" % (base, who, exc.request.method if exc.request else "GET", url)
    found = list(causes(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in found):
        also = (" (it serves the simulator there), or `python run_simulator.py --tls` (then pass --backend too)"
                if is_sim else "")
        return "nothing answers at %s: start `python run_server.py --simulator` first%s, or pass %s URL" % (
            where, also, flag)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in found):
        trusted = args.ca_file if os.path.exists(args.ca_file) else "%s, not found" % args.ca_file
        return ("%s has a certificate not issued by --ca-file (%s): pass --ca-file with the simulator's CA "
                "(ca.pem in its TLS directory: sim-tls/ where run_server.py --simulator ran)" % (where, trusted))
    if parts.scheme == "http" and speaks_tls(parts.hostname, parts.port or 80):
        return "%s speaks HTTPS here: use https://%s (%s https://%s)" % (who, parts.netloc, flag, parts.netloc)
    if any(isinstance(e, ssl.SSLError) for e in found):
        return "%s does not speak HTTPS (%s): if it is plain HTTP, use http://%s" % (where, found[-1], parts.netloc)
    return "cannot reach %s: %s" % (where, found[-1] if found else exc)


def causes(exc):
    """The exceptions behind a requests error (urllib3 wraps the socket's in reasons and arguments)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(x, BaseException)]


def speaks_tls(host, port):
    """Whether host:port completes a TLS handshake (certificates not checked: only the protocol matters)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS) as sock:
            context.wrap_socket(sock, server_hostname=host).close()
    except OSError:
        return False
    return True


def step(n, text):
    print("[%d/%d] %s" % (n, STEPS, text), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
