"""run_simulator.py's command line: flags -> SimConfig, TLS files and v3 keys -> State -> listen (the banner: banner.py, `env`: envcmd.py)."""
import argparse
import asyncio
import datetime
import errno
import logging
import signal
import ssl
import sys

import tornado.netutil

import simulator
from simulator import clientenv, hosts, tls
from simulator.v3 import keys as v3keys
from simulator.app import make_app, make_server
from simulator.config import (DEMO_API_KEY, DEMO_APIV3_KEY, DEMO_APPID, DEMO_MCH_ID, DEMO_SECRET,
                              REFUND_DELAY, ConfigError, SimConfig)
from simulator.banner import banner, settings_line
from simulator.models import BEIJING
from simulator.rules import MAX_BODY
from simulator.state import State

PROG = "run_simulator.py"
DESCRIPTION = """Run the offline WeChat simulator: login, Pay v2 and API v3 (JSAPI, refunds included),
notifications and the /sim/ control plane; with --tls over HTTPS with a local CA and client
certificates."""


def number_type(convert, ok, wrong_type, out_of_range):
    """An argparse type: convert(text), then ok(value), each with its own one-line complaint."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(wrong_type % (text,)) from None
        if not ok(value):
            raise argparse.ArgumentTypeError(out_of_range % (value,))
        return value
    return parse


positive_float = number_type(float, lambda v: 0 < v < float("inf"), "not a number: %r",
                             "must be a positive number: %r")
non_negative_float = number_type(float, lambda v: 0 <= v < 1e9, "not a number: %r",
                                 "must be a number of seconds >= 0: %r")
probability = number_type(float, lambda v: 0 <= v <= 1, "not a number: %r",
                          "a probability is 0..1, not %r")
port_number = number_type(int, lambda v: 0 <= v <= 65535, "not a port number: %r", "a port is 0..65535, not %d")


def host_name(text):
    try:
        return hosts.allowed_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv):
    p = build_parser()
    p.usage = with_subcommands(p)
    return p.parse_args(argv)


def build_parser(prog=PROG):
    """The simulator's options (`env` takes them too, to print the settings for them)."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=(
        "Subcommands: '%s demo --backend URL' plays a Mini Program against a backend (demo --help); "
        "'%s env <the same options>' prints the settings a backend needs for this simulator "
        "(env --help)." % (PROG, PROG)))
    p.add_argument("--version", action="version", version="%(prog)s " + simulator.__version__,
                   help="print the version and exit")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1); /sim/ answers under it too")
    p.add_argument("--port", type=port_number, default=9000,
                   help="the port to listen on (default 9000; 0 picks a free port)")
    p.add_argument("--allow-host", action="append", default=[], type=host_name, metavar="NAME",
                   help="another Host name (with any port) under which /sim/ and the console "
                   "answer, e.g. a tunnel's name or a LAN address; repeatable. By default only "
                   "loopback names (localhost, *.localhost, 127.0.0.0/8, [::1]) and --host: "
                   "other names get 403, so a web page whose name was rebound to this address "
                   "(DNS rebinding) cannot drive the simulator. WeChat's paths answer any Host")
    p.add_argument("--appid", help="default: %s" % DEMO_APPID)
    p.add_argument("--app-secret", help="the Mini Program AppSecret (default: the demo's)")
    p.add_argument("--mch-id", help="default: %s" % DEMO_MCH_ID)
    p.add_argument("--api-key", help="the merchant API key, 32 characters (default: the demo's)")
    p.add_argument("--config", help="JSON file with several apps and merchants "
                   "(see SimConfig.from_file); excludes the four credential flags")
    p.add_argument("--time-scale", type=positive_float, default=1.0,
                   help="multiplies every WeChat duration: 0.001 turns 15 s into 15 ms")
    p.add_argument("--access-log", action="store_true",
                   help="log every request (default: only 4xx/5xx; GET /sim/requests has them all)")
    p.add_argument("--notify-timeout", type=positive_float, default=5.0,
                   help="seconds a notify_url has to answer (not scaled; default 5)")
    p.add_argument("--refund-delay", type=non_negative_float, default=REFUND_DELAY,
                   help="seconds a refund stays PROCESSING before it settles (SUCCESS, or what "
                   "the control plane chose) and its notification goes out; scaled by "
                   "--time-scale like every WeChat duration (default %g)" % REFUND_DELAY)
    p.add_argument("--accept-unknown-codes", action="store_true",
                   help="developer mode for WeChat DevTools: take a login code this simulator never "
                   "issued (from wx.login in DevTools), once, as the app's developer user (one "
                   "stable openid per appid); by default only codes from POST /sim/login work")
    p.add_argument("--seed", type=int, default=None,
                   help="seed the random draws of fault rules with a probability below 1, so "
                   "that a run fires the same faults again (default: unseeded)")
    p.add_argument("--notify-sign-type-probability", type=probability, default=0.0,
                   metavar="P", help="the chance (0..1) that an ordinary payment notification "
                   "carries a sign_type field (the order's MD5 or HMAC-SHA256, signed with the "
                   "rest), as real WeChat's sometimes do; drawn from the --seed random "
                   "(default 0: never; POST /sim/orders/<no>/notify {\"mode\": "
                   "\"with_sign_type\"} sends one on demand)")
    p.add_argument("--pay-version", choices=clientenv.PAY_VERSIONS, default="v2",
                   help="the WeChat Pay API whose settings `env` and --ready-file give a client "
                   "(default v2; the simulator serves both)")
    p.add_argument("--ready-file", metavar="PATH",
                   help="once listening, write PATH (atomically, mode 0600) as JSON: the URL, the "
                   "pid and the settings `env --format json` prints; removed on a clean stop, "
                   "and a left-over replaced on start")
    p.add_argument("--tls", action="store_true",
                   help="serve HTTPS with a local CA; /secapi/ (refund) then requires the "
                   "merchant's client certificate issued by that CA, like WeChat")
    p.add_argument("--tls-dir", default="sim-tls",
                   help="where --tls creates or reuses ca.pem, server.pem, merchant.pem and "
                   "their keys (default ./sim-tls)")
    p.add_argument("--tls-ca-cert", help="with --tls: issue from this CA certificate (PEM) "
                   "instead of creating one; needs --tls-ca-key")
    p.add_argument("--tls-ca-key", help="with --tls: the private key (PEM) of --tls-ca-cert")
    v3 = p.add_argument_group("WeChat Pay API v3", "the v3 endpoints answer for one merchant: "
                              "--mch-id's (or the first of --config)")
    v3.add_argument("--v3-dir", default="sim-v3",
                    help="where the v3 keys, certificates and the manifest v3.json are made or "
                    "reused (default ./sim-v3)")
    v3.add_argument("--v3-key-mode", choices=v3keys.KEY_MODES, default="public-key",
                    help="how WeChat's answers and notifications are signed: public-key (the "
                    "WeChat Pay public key, Wechatpay-Serial PUB_KEY_ID_...; default), "
                    "certificate (the platform certificate, served by GET /v3/certificates) or "
                    "migration (answers: the key the request's Wechatpay-Serial names, else the "
                    "certificate; notifications: both, alternating)")
    v3.add_argument("--apiv3-key", help="the merchant's APIv3 key, 32 characters (default: "
                    "the demo's)")
    v3.add_argument("--v3-merchant-cert", metavar="PEM",
                    help="the merchant's API certificate (apiclient_cert.pem): its serial and "
                    "public key verify requests; default: a demo key pair made in --v3-dir")
    v3.add_argument("--v3-merchant-public-key", metavar="PEM",
                    help="the merchant's API public key instead of its certificate; needs "
                    "--v3-merchant-serial")
    v3.add_argument("--v3-merchant-serial", metavar="S",
                    help="the serial (hex) of the merchant's API certificate, with "
                    "--v3-merchant-public-key")
    return p


def with_subcommands(p):
    """The usage line of the simulator and, below it, of its subcommand `demo`."""
    from simulator.demo import build_parser as demo_parser   # its own module (it needs requests)
    own = p.format_usage().split(": ", 1)[1].rstrip()
    demo = demo_parser().format_usage().split(": ", 1)[1].rstrip()
    env = "%s env [the options above] [--format sh|dotenv|json]" % PROG
    return "%s\n       %s\n       %s" % (own, demo, env)


def build_config(args):
    flags = (args.appid, args.app_secret, args.mch_id, args.api_key)
    if args.config:
        if any(flag is not None for flag in flags):
            raise ConfigError("--config cannot be combined with --appid, --app-secret, "
                                  "--mch-id or --api-key")
        return SimConfig.from_file(args.config)
    return SimConfig.single(args.appid or DEMO_APPID, args.app_secret or DEMO_SECRET,
                            args.mch_id or DEMO_MCH_ID, args.api_key or DEMO_API_KEY)


def prepare_v3(args, config):
    """The v3 keys of the first merchant (the one of --mch-id, or the first of --config)."""
    merchant = next(iter(config.merchants.values()))
    return v3keys.prepare(args.v3_dir, merchant.mch_id, merchant.appids[0],
                          args.apiv3_key or DEMO_APIV3_KEY, args.v3_key_mode,
                          merchant_cert=args.v3_merchant_cert,
                          merchant_public_key=args.v3_merchant_public_key,
                          merchant_serial=args.v3_merchant_serial)


def check_tls_args(args):
    if (args.tls_ca_cert is None) != (args.tls_ca_key is None):
        raise ConfigError("--tls-ca-cert and --tls-ca-key go together")
    if args.tls_ca_cert is not None and not args.tls:
        raise ConfigError("--tls-ca-cert and --tls-ca-key need --tls")


def check_host(args):
    """--host is one of the names /sim/ answers under: it must be a name or an address."""
    try:
        hosts.HostPolicy(args.host)
    except ValueError as exc:
        raise ConfigError("--host: %s" % exc) from None


def prepare_tls(args, config):
    """The CA, server and merchant certificates: {mch_id: (cert, key)} and TLSFiles."""
    merchants = list(config.merchants)
    hosts = () if args.host in ("", "0.0.0.0", "::") else (args.host,)
    files = tls.prepare(args.tls_dir, mch_id=merchants[0], ca_cert=args.tls_ca_cert,
                        ca_key=args.tls_ca_key, hosts=hosts)
    certs = {merchants[0]: (files.client_cert, files.client_key)}
    for mch_id in merchants[1:]:
        certs[mch_id] = tls.issue_merchant(files, mch_id)
    return files, certs


class ZonedFormatter(logging.Formatter):
    """Times in ISO 8601 with their offset, in Beijing time (WeChat's, and the backend's logs' too)."""

    def formatTime(self, record, datefmt=None):
        return datetime.datetime.fromtimestamp(record.created, BEIJING).isoformat(timespec="milliseconds")


def log_formatter():
    return ZonedFormatter("%(asctime)s %(name)s %(message)s")


def fail(message):
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    return 2


LISTEN_BACKLOG = 1024


def listen(app, host, port, ssl_options=None):
    """Bind first, so a busy port is reported before anything is printed."""
    # a deep accept queue: a burst of new connections (a flash sale) must not wait for SYN retries
    sockets = tornado.netutil.bind_sockets(port, host, backlog=LISTEN_BACKLOG)
    server = make_server(app, max_body_size=MAX_BODY, ssl_options=ssl_options)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


async def serve(args, config, tls_files=None, merchant_certs=None, ssl_options=None, v3=None):
    state = State(config, time_scale=args.time_scale, refund_delay=args.refund_delay,
                  accept_unknown_codes=args.accept_unknown_codes, seed=args.seed,
                  notify_sign_type_probability=args.notify_sign_type_probability, v3=v3)
    app = make_app(state, notify_timeout=args.notify_timeout, listen_host=args.host,
                   allow_hosts=args.allow_host, pay_version=args.pay_version)
    try:
        server, port = listen(app, args.host, args.port, ssl_options)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return fail("port %d on %s is already in use (another simulator? try --port)"
                        % (args.port, args.host))
        return fail("cannot listen on %s:%d: %s" % (args.host, args.port, exc.strerror or exc))
    stopped = stop_signal()
    host = "[%s]" % args.host if ":" in args.host else args.host
    scheme = "https" if tls_files else "http"
    try:
        if args.ready_file:
            clientenv.write_ready(args.ready_file, clientenv.base_url(args.host, port, tls_files is not None),
                                  client_settings(args, port, config, tls_files, v3))
    except clientenv.ReadyError as exc:
        server.stop()
        app.shutdown()
        return fail("--ready-file: %s" % exc)
    print(banner("%s://%s:%d" % (scheme, host, port), config, args.time_scale,
                 args.refund_delay, tls_files, merchant_certs, args.accept_unknown_codes,
                 args.seed, args.notify_sign_type_probability, v3, app.sim_hosts), flush=True)
    print(settings_line(args.ready_file), flush=True)
    await stopped.wait()
    server.stop()
    app.shutdown()
    try:
        await asyncio.wait_for(server.close_all_connections(), 5)
    except asyncio.TimeoutError:
        pass    # a client holding a connection open must not keep us alive
    if args.ready_file:
        clientenv.remove_ready(args.ready_file)
    print("WeChat simulator stopped", flush=True)
    return 0


def stop_signal():
    """An event set by SIGTERM or SIGINT; installed before the banner says the process serves,
    so that a supervisor stopping it as soon as it reads the banner gets a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def prepare(args, with_v3=True):
    """The configuration and files the flags name: (config, tls_files, merchant_certs, v3);
    ConfigError, tls.TLSError, v3keys.V3Error or ssl.SSLError say what is wrong."""
    config = build_config(args)
    check_tls_args(args)
    check_host(args)
    tls_files, merchant_certs = prepare_tls(args, config) if args.tls else (None, None)
    return config, tls_files, merchant_certs, prepare_v3(args, config) if with_v3 else None


def client_settings(args, port, config, tls_files, v3):
    """What `env` prints for these flags, with the port the simulator listens on."""
    url = clientenv.base_url(args.host, port, tls_files is not None)
    return clientenv.settings(url, config, args.pay_version, tls_files, v3)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from simulator.demo import main as demo_main     # the lead's; needs the backend
        return demo_main(argv[1:])
    if argv[:1] == ["env"]:
        from simulator.envcmd import main as env_main
        return env_main(argv[1:])
    args = parse_args(argv)
    try:
        config, tls_files, merchant_certs, v3 = prepare(args)
        ssl_options = tls.server_context(tls_files) if tls_files else None
        if args.ready_file:
            clientenv.remove_ready(args.ready_file)     # a killed run's file must not read as ready
    except (ConfigError, tls.TLSError, v3keys.V3Error, clientenv.ReadyError) as exc:
        return fail(str(exc))
    except ssl.SSLError as exc:     # the files exist but OpenSSL refuses them
        return fail("TLS: %s" % exc)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if not args.access_log:
        logging.getLogger("simulator.access").setLevel(logging.WARNING)
    return asyncio.run(serve(args, config, tls_files, merchant_certs, ssl_options, v3))
