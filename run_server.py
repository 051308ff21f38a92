"""Run the payment backend: flags + environment -> Config -> make_app() -> listen."""
import argparse
import asyncio
import errno
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time

import tornado.netutil

from server import config as server_config
from server.app import App
from server.catalog import Catalog, CatalogError
from server.http.server import GuardedHTTPServer, default_max_connections, descriptor_limit
from server.store import StoreError, describe_url, is_postgres, open_store, open_waiting

log = logging.getLogger("run_server")
LISTEN_BACKLOG = 1024  # flash sales open many connections at once
MAX_PROCESSES = 64
RESTART_AFTER = 0.25, 30.0   # back-off of a restart: doubled from 0.5 s up to 30 s while replacements die young


class StartError(Exception):
    """A reason not to start, in one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line naming the flag (argparse's own adds a usage block), exit code 2."""
        self.exit(2, "%s: %s\n" % (self.prog, message))


def port_number(text):
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError("must be a port number from 1 to 65535, not %r" % text[:16])
    return int(text)


def seconds(low, high, above=False):
    """An argparse type: a number of seconds from `low` (or above it) to `high`."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not (low < value if above else low <= value) or value > high:
            raise argparse.ArgumentTypeError("must be a number of seconds %s %g, at most %g (got %r)"
                                             % ("above" if above else "from", low, high, text[:16]))
        return value
    return parse


def process_count(text):
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PROCESSES):
        raise argparse.ArgumentTypeError("must be a whole number from 1 to %d, not %r" % (MAX_PROCESSES, text[:16]))
    return int(text)


def host_name(text):
    """A name the bundled simulator's /sim/ answers under (simulator.hosts, imported only here)."""
    from simulator.hosts import allowed_name
    try:
        return allowed_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log_level(text):
    if text.upper() not in server_config.LOG_LEVELS:
        raise argparse.ArgumentTypeError("must be one of %s" % ", ".join(server_config.LOG_LEVELS))
    return text.upper()


def parse_args(argv):
    p = Parser(prog="run_server.py", description="WeChat Mini Program payment backend.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--simulator", action="store_true",
                   help="run the bundled WeChat simulator in this process, with the demo credentials")
    p.add_argument("--simulator-port", type=port_number, default=9000)
    p.add_argument("--time-scale", type=seconds(0, 1000, above=True), default=1.0,
                   help="with --simulator: scale the simulator's WeChat durations")
    p.add_argument("--simulator-tls-dir", default="sim-tls",
                   help="with --simulator: where the simulator's CA and the merchant certificate are kept")
    p.add_argument("--simulator-allow-host", action="append", default=[], type=host_name, metavar="NAME",
                   help="with --simulator: another Host name under which the simulator's /sim/ and console "
                        "answer (a tunnel's name); repeatable. By default only loopback names "
                        "(127.0.0.1, localhost), so a web page rebound to 127.0.0.1 cannot drive it")
    p.add_argument("--database-url", help="overrides DATABASE_URL")
    p.add_argument("--sign-type", choices=["MD5", "HMAC-SHA256"], help="overrides WECHAT_SIGN_TYPE")
    p.add_argument("--pay-version", choices=["v2", "v3"], help="overrides WECHAT_PAY_VERSION (default v2)")
    p.add_argument("--simulator-v3-dir", default="sim-v3",
                   help="with --simulator and v3: where the simulator keeps its v3 keys and writes v3.json")
    p.add_argument("--simulator-v3-key-mode", choices=["public-key", "certificate", "migration"],
                   default="public-key", help="with --simulator and v3: how the simulator signs (and so how "
                                              "the backend verifies): the WeChat Pay public key, platform "
                                              "certificates, or both")
    p.add_argument("--notify-url", help="overrides WECHAT_NOTIFY_URL")
    p.add_argument("--sweep-interval", type=seconds(0, 86400),
                   help="seconds between background orderquery/refundquery sweeps for missing "
                        "notifications (SWEEP_INTERVAL, default 60; 0 turns it off)")
    p.add_argument("--log-level", type=log_level, help="LOG_LEVEL, default INFO")
    p.add_argument("--event-loop", choices=server_config.EVENT_LOOPS,
                   help="EVENT_LOOP: asyncio (default) or uvloop (README \"Scaling out\")")
    p.add_argument("--access-log", action="store_true", default=os.environ.get("ACCESS_LOG") == "1",
                   help="log every request (ACCESS_LOG=1); by default only 4xx/5xx answers are logged")
    p.add_argument("--processes", type=process_count, default=1,
                   help="serve from N processes sharing the listening socket (PostgreSQL only; "
                        "a process that dies is started again; SIGTERM drains them all)")
    p.add_argument("--migrate", action="store_true",
                   help="create or upgrade the database schema, then exit (for deployments that "
                        "migrate before starting new code)")
    p.add_argument("--xheaders", action="store_true", default=os.environ.get("TRUST_PROXY_HEADERS") == "1",
                   help="behind a reverse proxy: take the client address from X-Real-IP / "
                        "X-Forwarded-For (TRUST_PROXY_HEADERS=1)")
    return p.parse_args(argv)


def build_config(args, environ, bundled=None):
    """The Config of flags and environment; with --simulator, wired to the bundled simulator
    (`bundled`: its Bundled files: TLS, and in v3 its keys and manifest)."""
    overrides = {"database_url": args.database_url, "sign_type": args.sign_type,
                 "notify_url": args.notify_url, "pay_version": args.pay_version}
    if args.simulator:
        sim = "https://127.0.0.1:%d" % args.simulator_port
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        host = "[%s]" % host if ":" in host else host
        demo = simulator_demo()
        notify_path = server_config.PAY_NOTIFY_PATH_V3 if bundled.v3 else server_config.PAY_NOTIFY_PATH
        tls_files = bundled.tls
        overrides.update(
            appid=demo["appid"], app_secret=demo["app_secret"], mch_id=demo["mch_id"], api_key=demo["api_key"],
            login_base_url=sim, pay_base_url=sim,
            notify_url=args.notify_url or "http://%s:%d%s" % (host, args.port, notify_path),
            refund_notify_url=None, ca_file=tls_files.ca_cert, cert_file=tls_files.client_cert,
            key_file=tls_files.client_key)
        if bundled.v3:
            overrides.update(v3_overrides(bundled.manifest, args.simulator_v3_dir))
    return server_config.Config.from_env(environ, overrides)


MANIFEST_FIELDS = ("mchid", "appid", "apiv3_key", "merchant_serial_no", "key_mode")


def read_v3_manifest(path):
    """The simulator's v3 manifest (DIR/v3.json: see the README); StartError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise StartError("cannot read the simulator's v3 manifest %s: %s" % (path, getattr(exc, "strerror", None)
                                                                            or type(exc).__name__)) from None
    missing = [field for field in MANIFEST_FIELDS if not isinstance(manifest, dict) or not manifest.get(field)]
    if missing:
        raise StartError("the simulator's v3 manifest %s lacks %s" % (path, ", ".join(missing)))
    return manifest


def v3_overrides(manifest, v3_dir):
    """Config fields for WeChat Pay v3 from the simulator's manifest: its mchid, appid and
    APIv3 key, the merchant's serial and (when the simulator made it) private key, and the
    simulator's public key (public-key and migration modes) or a directory for the platform
    certificates the backend fetches from it (certificate and migration modes). Values the
    manifest lacks (a merchant key the simulator was given, not made) come from the
    environment as usual (WECHAT_MCH_PRIVATE_KEY_FILE)."""
    mode = manifest["key_mode"]
    fields = {"pay_version": server_config.V3, "mch_id": manifest["mchid"], "appid": manifest["appid"],
              "apiv3_key": manifest["apiv3_key"], "mch_serial_no": manifest["merchant_serial_no"],
              "mch_private_key_file": manifest.get("merchant_private_key_file")}
    if mode in ("public-key", "migration"):
        fields.update(pay_public_key_file=manifest.get("wechatpay_public_key_file"),
                      pay_public_key_id=manifest.get("wechatpay_public_key_id"))
    if mode in ("certificate", "migration"):
        fields.update(platform_cert_dir=os.path.join(os.path.abspath(v3_dir), "backend-platform-certs"))
    return fields


class Bundled:
    """What the bundled simulator (--simulator) is started with: its TLS files (simulator/tls.py),
    and with --pay-version v3 its v3 keys (simulator.v3keys.V3Setup) and the manifest it wrote,
    DIR/v3.json, as the backend reads it."""

    def __init__(self, tls, v3=None, manifest=None):
        self.tls, self.v3, self.manifest = tls, v3, manifest


def bundled_simulator(args, environ):
    """Prepare the bundled simulator's files: TLS always, v3 keys when the pay version is v3."""
    tls_files = simulator_tls(args)
    if (args.pay_version or environ.get("WECHAT_PAY_VERSION")) != server_config.V3:
        return Bundled(tls_files)
    setup = simulator_v3_setup(args)
    return Bundled(tls_files, setup, read_v3_manifest(setup.manifest_file))


def simulator_v3_setup(args):
    """Have the bundled simulator make (first start) or load its v3 keys in
    --simulator-v3-dir for the demo merchant, in --simulator-v3-key-mode (it writes the
    manifest DIR/v3.json, which the backend then reads like any other configuration)."""
    from simulator import v3keys
    from simulator.config import DEMO_APIV3_KEY, DEMO_APPID, DEMO_MCH_ID
    try:
        return v3keys.prepare(args.simulator_v3_dir, DEMO_MCH_ID, DEMO_APPID, DEMO_APIV3_KEY,
                              args.simulator_v3_key_mode)
    except v3keys.V3Error as exc:
        raise StartError("--simulator-v3-dir: %s" % exc) from None


def simulator_demo():
    """The bundled simulator's demo app and merchant (simulator/demo.json); simulator/ is
    imported only for --simulator: server/ never imports it."""
    from simulator.config import DEMO
    return DEMO


def setup_logging(level, access_log):
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not access_log:  # a line per request is the proxy's job; errors are still logged
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
        logging.getLogger("simulator.access").setLevel(logging.WARNING)


def simulator_tls(args):
    """The simulator's CA, server and merchant certificates."""
    from simulator import tls
    return tls.prepare(args.simulator_tls_dir, mch_id=simulator_demo()["mch_id"])


def bind(flag, port, host):
    """Listening sockets for host:port; StartError naming the flag when that fails."""
    try:
        return tornado.netutil.bind_sockets(port, host, backlog=LISTEN_BACKLOG)
    except socket.gaierror as exc:
        raise StartError("--host %s: %s" % (host, exc.strerror)) from None
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartError("%s %d: cannot listen on %s: %s" % (flag, port, host, reason)) from None


def start_simulator(args, bundled, sockets):
    """The bundled simulator on --simulator-port, HTTPS, /secapi/ requiring the merchant
    certificate; in v3 serving API v3 too, with the keys bundled_simulator() prepared."""
    from simulator import tls
    from simulator.app import make_app as make_sim_app, make_server as make_sim_server
    from simulator.config import SimConfig
    from simulator.state import State
    # developer mode: WeChat DevTools' wx.login codes were issued by Tencent, not by us
    sim_app = make_sim_app(State(SimConfig.demo(), time_scale=args.time_scale, accept_unknown_codes=True,
                                 v3=bundled.v3), allow_hosts=args.simulator_allow_host)
    make_sim_server(sim_app, ssl_options=tls.server_context(bundled.tls)).add_sockets(sockets)
    print("WeChat simulator on https://127.0.0.1:%d (console https://127.0.0.1:%d/sim/console; demo "
          "credentials; CA %s; login codes it never issued are taken as the developer user)"
          % (args.simulator_port, args.simulator_port, bundled.tls.ca_cert), flush=True)
    if bundled.v3:
        print("WeChat Pay API v3 at the simulator: key mode %s; its keys and manifest in %s"
              % (bundled.v3.key_mode, bundled.v3.manifest_file), flush=True)
    return sim_app


async def serve(args, options, config, bundled=None, sockets=None):
    """Serve until SIGTERM/SIGINT, then drain. `sockets`: already bound (a process of several)."""
    shop = App(config, sweep_interval=options.sweep_interval)
    await shop.start()
    one_of_several = sockets is not None
    try:
        sockets = sockets or bind("--port", args.port, args.host)
        sim_sockets = bind("--simulator-port", args.simulator_port, "127.0.0.1") if args.simulator else None
    except StartError:
        for sock in sockets or ():
            sock.close()
        await shop.stop()
        raise
    sim_app = start_simulator(args, bundled, sim_sockets) if args.simulator else None
    server = GuardedHTTPServer(shop.web, limits=options.limits, xheaders=args.xheaders)
    server.add_sockets(sockets)
    if one_of_several:
        log.info("process %d serving", os.getpid())
    else:
        print_banner(args, options, config, server.max_connections)
    if args.simulator:
        print(devtools_hint(args), flush=True)
    await wait_for_signal()
    log.info("shutting down: no new connections, draining requests in flight")
    server.stop()
    await shop.stop()
    if sim_app is not None:
        sim_app.shutdown()
    log.info("stopped")


def print_banner(args, options, config, max_connections, processes=1):
    limits = options.limits
    print("Backend on http://%s:%d (notify URL %s, sign type %s, database %s%s)" % (
        "[%s]" % args.host if ":" in args.host else args.host, args.port,
        config.notify_url, config.sign_type, describe_url(config.database_url),
        ", %d processes" % processes if processes > 1 else ""), flush=True)
    if config.pay_version == server_config.V3:
        print("WeChat Pay API v3: merchant %s, certificate serial %s; WeChat's signatures verified with %s"
              % (config.mch_id, config.mch_serial_no, " and ".join(filter(None, [
                  config.pay_public_key_id and "the WeChat Pay public key %s" % config.pay_public_key_id,
                  config.platform_cert_dir and "platform certificates kept in %s" % config.platform_cert_dir]))),
              flush=True)
    print("HTTP limits%s: first request head within %gs, body within %gs, idle keep-alive %gs, answers "
          "taken within %gs, at most %d connections (descriptor limit %s)" % (
              " per process" if processes > 1 else "",
              limits.header_timeout, limits.body_timeout, limits.idle_timeout, limits.send_timeout,
              max_connections, descriptor_limit() or "none"), flush=True)


async def migrate(config):
    """Open the database (creating or upgrading its schema; waiting up to DATABASE_WAIT for it
    to be reachable) and close it again."""
    store = open_store(config.database_url, pool_size=1, timeout=config.database_timeout)
    await open_waiting(store, config.database_wait)
    await store.close()


def check_processes(args, config):
    """StartError unless several processes can share this configuration."""
    if args.processes == 1:
        return
    if not is_postgres(config.database_url):
        raise StartError("--processes %d needs PostgreSQL (DATABASE_URL=postgresql://...): a SQLite file "
                         "has one writer and this backend keeps it in one process" % args.processes)


def supervise(args, options, config):
    """Several processes on one listening socket: the database is migrated once here, the
    socket bound here, then N forked processes each serve it with their own IOLoop, store
    pool and sweep (the sweep's claims keep them from querying one order twice). A process
    that dies is started again, after 0.25 s, or, while its replacements keep dying within
    30 s of their start, after 0.5 s doubling up to 30 s (a database outage does not spin,
    and never stops the processes that still serve). SIGTERM or SIGINT closes the listening socket here (new
    connections are refused at once, so a proxy tries another host), is passed on to every
    process, each drains its requests, and this one returns when all have ended."""
    if config.catalog_file:
        Catalog.from_file(config.catalog_file)   # a bad catalog: one line now, not N crashing processes
    asyncio.run(migrate(config))
    sockets = bind("--port", args.port, args.host)
    max_connections = options.limits.max_connections or default_max_connections()
    print_banner(args, options, config, max_connections, args.processes)
    supervisor = os.getpid()
    children, stopping, pending = {}, [], []     # pid -> (index, started); [(due, index, delay)]
    signals = {signal.SIGTERM, signal.SIGINT}

    def spawn(index):
        # signals blocked from the check to the fork: a stop arriving in between must see this child
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            if stopping:
                return
            pid = os.fork()
            if pid == 0:
                os._exit(child_main(args, options, config, sockets, supervisor))
            children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def stop(signum, _frame):
        if not stopping:
            log.info("%s: stopping %d processes (each drains its requests)", signal.Signals(signum).name, len(children))
            for sock in sockets:   # nobody would accept what queues now: refuse it instead
                sock.close()
        stopping.append(signum)
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(args.processes):
        spawn(index)
    log.info("started %d processes: %s", args.processes, " ".join(map(str, children)))
    delays = {}                                  # index -> the back-off of its next restart
    while children or (pending and not stopping):
        now = time.monotonic()
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            spawn(item[1])
        pid, status = os.waitpid(-1, os.WNOHANG) if children else (0, 0)
        if pid == 0:
            time.sleep(0.05)
            continue
        index, started = children.pop(pid, (None, None))
        if index is None or stopping:
            continue
        how = ("signal %s" % signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status)
               else "exit code %d" % os.waitstatus_to_exitcode(status))
        young = time.monotonic() - started < RESTART_AFTER[1]
        delay = min(delays.get(index, RESTART_AFTER[0]) * 2, RESTART_AFTER[1]) if young else RESTART_AFTER[0]
        delays[index] = delay if young else RESTART_AFTER[0]
        log.warning("process %d ended (%s); starting another in %gs", pid, how, delay)
        pending.append((time.monotonic() + delay, index, delay))
    for sock in sockets:
        sock.close()
    log.info("stopped")
    return 0


def child_main(args, options, config, sockets, supervisor):
    """A forked serving process: its exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    drain_if_orphaned(supervisor)
    try:
        run(options, serve(args, options, config, sockets=sockets))
        return 0
    except (StoreError, StartError) as exc:
        print("run_server.py: process %d: %s" % (os.getpid(), exc), file=sys.stderr, flush=True)
        return 2
    except BaseException:
        log.exception("process %d failed", os.getpid())
        return 1
    finally:
        logging.shutdown()


def run(options, main_coroutine):
    """asyncio.run() on the configured event loop (EVENT_LOOP)."""
    factory = None
    if options.event_loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main_coroutine)


def drain_if_orphaned(supervisor):
    """Linux: SIGTERM this process (it drains) if the supervising process dies, even by SIGKILL,
    rather than serving on unsupervised."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor:   # it died before prctl took effect (it may be PID 1 itself: a container)
        os.kill(os.getpid(), signal.SIGTERM)


async def wait_for_signal():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def devtools_hint(args):
    """How to buy from the sample Mini Program in WeChat DevTools against this run."""
    return "\n".join([
        "WeChat DevTools: import the folder miniprogram/ (appid %s)." % simulator_demo()["appid"],
        "  In Details > Local Settings tick \"Does not verify valid domain names, web-view (business domain "
        "names), TLS versions and HTTPS certificates\".",
        "  miniprogram/config.js must say baseUrl: 'http://127.0.0.1:%d', simulatorUrl: 'https://127.0.0.1:%d'%s."
        % (args.port, args.simulator_port,
           " (as it does)" if (args.port, args.simulator_port) == (8000, 9000) else " (edit it: not the defaults)"),
        "  Tap Buy, then pick Pay, Cancel or Fail: the simulator plays the phone."])


def configure(args, environ):
    """(ServerOptions, Config, the bundled simulator's files or None); ConfigError naming every
    problem, StartError for the bundled simulator's."""
    problems = []
    try:
        options = server_config.ServerOptions.from_env(
            environ, {"sweep_interval": args.sweep_interval, "log_level": args.log_level,
                      "event_loop": args.event_loop})
    except server_config.ConfigError as exc:
        problems, options = exc.problems, None
    setup_logging(options.log_level if options else "INFO", args.access_log)
    bundled = bundled_simulator(args, environ) if args.simulator else None
    admin_token = None
    if args.simulator and not environ.get("ADMIN_TOKEN"):
        admin_token = environ["ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    try:
        config = build_config(args, environ, bundled)
    except server_config.ConfigError as exc:
        problems += exc.problems
    if problems:
        raise server_config.ConfigError(problems)
    if admin_token:
        print("Admin API token for this run (set ADMIN_TOKEN to choose one): %s" % admin_token, flush=True)
    return options, config, bundled


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.processes > 1 and args.simulator:
            raise StartError("--processes %d cannot run the bundled --simulator (its state lives in one "
                             "process): run run_simulator.py on its own" % args.processes)
        options, config, bundled = configure(args, dict(os.environ))
        check_processes(args, config)
        if args.migrate:
            asyncio.run(migrate(config))
            print("Database %s is at the current schema" % describe_url(config.database_url), flush=True)
        elif args.processes > 1:
            return supervise(args, options, config)
        else:
            run(options, serve(args, options, config, bundled))
    except (server_config.ConfigError, StartError, StoreError) as exc:
        print("run_server.py: %s" % exc, file=sys.stderr)
        return 2
    except CatalogError as exc:
        print("run_server.py: CATALOG_FILE: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("run_server.py: cannot start: %s" % (exc.strerror or exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
