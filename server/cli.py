"""run_server.py's command line: flags and environment -> Config -> App -> listen (one process or several)."""
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

import tornado.netutil

import server
from server import config as server_config
from server import logs, metrics, settings, supervisor
from server.app import App
from server.catalog import Catalog, CatalogError
from server.banner import print_banner
from server.descriptors import default_max_connections
from server.http.scrape import metrics_application
from server.http.server import GuardedHTTPServer
from server.store import StoreError, describe_url, is_postgres, open_store, open_waiting

log = logging.getLogger("run_server")
PROG = "run_server.py"
LISTEN_BACKLOG = 1024  # flash sales open many connections at once
MAX_PROCESSES = 64


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


def host_name(allowed_name):
    """An argparse type: a name the bundled simulator's /sim/ answers under (its allowed_name)."""
    def parse(text):
        try:
            return allowed_name(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def setting_type(setting):
    """An argparse type: text the setting's check takes (its problem named after the flag)."""
    def parse(text):
        reason = setting.reason(text)
        if reason:
            raise argparse.ArgumentTypeError(reason)
        return text
    return parse


def add_setting_flags(p):
    """A flag per setting that has one (server/settings.py): its help, check and choices from there."""
    for setting in settings.SETTINGS:
        if setting.flag is None:
            continue
        spec = dict(dest=setting.field, default=None, help=settings.flag_help(setting))
        if setting.is_switch():   # the flag says on
            spec.update(action="store_const", const="1")
        elif setting.choices:
            spec.update(choices=setting.choices)
        else:
            spec.update(type=setting_type(setting), metavar=setting.field.split("_")[-1].upper())
        p.add_argument(setting.flag, **spec)


def flag_values(args, *groups):
    """The flags' values of these groups' settings, as overrides: {field: text or None}."""
    return {s.field: getattr(args, s.field) for s in settings.of(*groups) if s.flag}


def parse_args(argv, bundle=None):
    """The flags; `bundle` (simulator.bundle, given by run_server.py) checks --simulator-allow-host."""
    p = Parser(prog=PROG, description="WeChat Mini Program payment backend.")
    p.add_argument("--version", action="version", version="%(prog)s " + server.__version__,
                   help="print the version and exit")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="the port to listen on (default 8000)")
    p.add_argument("--simulator", action="store_true",
                   help="run the bundled WeChat simulator in this process, with the demo credentials")
    p.add_argument("--simulator-port", type=port_number, default=9000,
                   help="with --simulator: the port of the simulator, on 127.0.0.1 (default 9000)")
    p.add_argument("--time-scale", type=seconds(0, 1000, above=True), default=1.0,
                   help="with --simulator: scale the simulator's WeChat durations")
    p.add_argument("--simulator-tls-dir", default="sim-tls",
                   help="with --simulator: where the simulator's CA and the merchant certificate are kept")
    p.add_argument("--simulator-allow-host", action="append", default=[], metavar="NAME",
                   type=host_name(bundle.allowed_name) if bundle else str,
                   help="with --simulator: another Host name under which the simulator's /sim/ and console "
                        "answer (a tunnel's name); repeatable. By default only loopback names "
                        "(127.0.0.1, localhost), so a web page rebound to 127.0.0.1 cannot drive it")
    p.add_argument("--simulator-v3-dir", default="sim-v3",
                   help="with --simulator and v3: where the simulator keeps its v3 keys and writes v3.json")
    p.add_argument("--simulator-v3-key-mode", choices=["public-key", "certificate", "migration"],
                   default="public-key", help="with --simulator and v3: how the simulator signs (and so how "
                                              "the backend verifies): the WeChat Pay public key, platform "
                                              "certificates, or both")
    p.add_argument("--processes", type=process_count, default=1,
                   help="serve from N processes sharing the listening socket (PostgreSQL only; "
                        "a process that dies is started again; SIGTERM drains them all)")
    p.add_argument("--migrate", action="store_true",
                   help="create or upgrade the database schema, then exit (for deployments that "
                        "migrate before starting new code)")
    add_setting_flags(p)
    return p.parse_args(argv)


def build_config(args, environ, bundled=None, manifest=None):
    """The Config of flags and environment; with --simulator, wired to the bundled simulator
    (`bundled`: simulator.bundle.Bundled; `manifest`: its v3 manifest, in v3)."""
    overrides = flag_values(args, settings.SHOP, settings.V3)
    if args.simulator:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        host = "[%s]" % host if ":" in host else host
        notify_path = server_config.PAY_NOTIFY_PATH_V3 if manifest else server_config.PAY_NOTIFY_PATH
        overrides.update(bundled.settings("https://127.0.0.1:%d" % args.simulator_port))
        overrides.update(notify_url=args.notify_url or "http://%s:%d%s" % (host, args.port, notify_path),
                         refund_notify_url=None)
        if manifest:
            overrides.update(v3_overrides(manifest, args.simulator_v3_dir))
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


def bundled_simulator(args, environ, bundle):
    """The bundled simulator's files (TLS always, v3 keys when the pay version is v3) and, in
    v3, the manifest it wrote, as the backend reads it."""
    v3 = (args.pay_version or environ.get("WECHAT_PAY_VERSION")) == server_config.V3
    try:
        bundled = bundle.prepare(args.simulator_tls_dir, args.simulator_v3_dir if v3 else None,
                                 args.simulator_v3_key_mode)
    except bundle.BundleError as exc:
        raise StartError("--simulator-v3-dir: %s" % exc) from None
    return bundled, read_v3_manifest(bundled.manifest_file) if v3 else None


def bind(flag, port, host):
    """Listening sockets for host:port; StartError naming the flag when that fails."""
    try:
        return tornado.netutil.bind_sockets(port, host, backlog=LISTEN_BACKLOG)
    except socket.gaierror as exc:
        raise StartError("--host %s: %s" % (host, exc.strerror)) from None
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartError("%s %d: cannot listen on %s: %s" % (flag, port, host, reason)) from None


async def serve(args, options, config, bundle=None, bundled=None, sockets=None, made_token=None,
                metrics_sockets=None):
    """Serve until SIGTERM/SIGINT, then drain. `sockets` (and `metrics_sockets`, METRICS_LISTEN's):
    already bound (a process of several); `made_token`: the admin token made up for this run,
    printed once the server listens."""
    backend = App(config, sweep_interval=options.sweep_interval, metrics_route=not options.metrics_listen)
    await backend.start()
    one_of_several = sockets is not None
    sim_sockets = None
    try:   # the simulator's port first: once --port accepts (what a script waits for), it does too
        sim_sockets = bind("--simulator-port", args.simulator_port, "127.0.0.1") if args.simulator else None
        sockets = sockets or bind("--port", args.port, args.host)
        if options.metrics_listen and not one_of_several:
            metrics_sockets = bind_metrics(options.metrics_listen)
    except StartError:
        for sock in (sockets or []) + (metrics_sockets or []) + (sim_sockets or []):
            sock.close()
        await backend.stop()
        raise
    sim_app = bundle.start(bundled, sim_sockets, args.simulator_port, args.time_scale,
                           args.simulator_allow_host) if args.simulator else None
    server = GuardedHTTPServer(backend.web, limits=options.limits, xheaders=options.xheaders)
    server.add_sockets(sockets)
    metrics_server = None
    if metrics_sockets:
        metrics_server = GuardedHTTPServer(metrics_application(), limits=options.limits)
        metrics_server.add_sockets(metrics_sockets)
    stopped = stop_signal()
    if one_of_several:
        log.info("process %d serving", os.getpid())
    else:
        print_banner(args, options, config, server.max_connections)
    if made_token:
        print("Admin API token for this run (set ADMIN_TOKEN to choose one): %s" % made_token, flush=True)
    if args.simulator:
        print(devtools_hint(args, bundled.appid), flush=True)
    await stopped.wait()
    log.info("shutting down: no new connections, draining requests in flight")
    server.stop()
    if metrics_server is not None:
        metrics_server.stop()
    await backend.stop()
    if sim_app is not None:
        sim_app.shutdown()
    log.info("stopped")


async def migrate(config):
    """Open the database (creating or upgrading its schema; waiting up to DATABASE_WAIT for it
    to be reachable) and close it again."""
    store = open_store(config.database_url, pool_size=1, timeout=config.database_timeout)
    await open_waiting(store, config.database_wait)
    await store.close()


def check_processes(args, config):
    """StartError unless several processes can share this configuration."""
    if args.processes > 1 and args.simulator:
        raise StartError("--processes %d cannot run the bundled --simulator (its state lives in one "
                         "process): run run_simulator.py on its own" % args.processes)
    if args.processes > 1 and config is not None and not is_postgres(config.database_url):
        raise StartError("--processes %d needs PostgreSQL (DATABASE_URL=postgresql://...): a SQLite file "
                         "has one writer and this backend keeps it in one process" % args.processes)


def serve_several(args, options, config):
    """--processes N: the database migrated once here, the socket bound here, then N forked
    processes each serve it with their own IOLoop, store pool and sweep (the sweep's claims
    keep them from querying one order twice); see server.supervisor."""
    if config.catalog_file:
        Catalog.from_file(config.catalog_file)   # a bad catalog: one line now, not N crashing processes
    asyncio.run(migrate(config))
    sockets = bind("--port", args.port, args.host)
    metrics_sockets = bind_metrics(options.metrics_listen) if options.metrics_listen else []
    max_connections = options.limits.max_connections or default_max_connections()
    with metrics.MultiprocessDirectory(options.metrics_dir) as directory:
        metrics.setup(directory)   # before the fork: every process writes its metrics there
        print_banner(args, options, config, max_connections, args.processes)

        def serve_process(bound):
            try:
                supervisor.run(options.event_loop, serve(args, options, config, sockets=bound[:len(sockets)],
                                                         metrics_sockets=bound[len(sockets):]))
                return 0
            except (StoreError, StartError) as exc:
                print("%s: process %d: %s" % (PROG, os.getpid(), exc), file=sys.stderr, flush=True)
                return 2
        return supervisor.Supervisor(args.processes, sockets + metrics_sockets, serve_process,
                                     metrics.process_dead).run()


def bind_metrics(listen):
    """METRICS_LISTEN's sockets; StartError naming it when that fails."""
    host, port = settings.listen_address(listen)
    return bind("METRICS_LISTEN", port, host)


def stop_signal():
    """An event set by SIGTERM or SIGINT; installed before the banner says the process serves,
    so that a supervisor stopping it as soon as it reads the banner gets a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def devtools_hint(args, appid):
    """How to buy from the sample Mini Program in WeChat DevTools against this run."""
    return "\n".join([
        "WeChat DevTools: import the folder miniprogram/ (appid %s)." % appid,
        "  In Details > Local Settings tick \"Does not verify valid domain names, web-view (business domain "
        "names), TLS versions and HTTPS certificates\".",
        "  miniprogram/config.js must say baseUrl: 'http://127.0.0.1:%d', simulatorUrl: 'https://127.0.0.1:%d'%s."
        % (args.port, args.simulator_port,
           " (as it does)" if (args.port, args.simulator_port) == (8000, 9000) else " (edit it: not the defaults)"),
        "  Tap Buy, then pick Pay, Cancel or Fail: the simulator plays the phone."])


def configure(args, environ, bundle=None):
    """(ServerOptions, Config, the bundled simulator or None, the admin token made up for this run
    or None); ConfigError naming every problem, StartError for the bundled simulator's."""
    problems = []
    try:
        options = server_config.ServerOptions.from_env(environ, flag_values(args, settings.PROCESS))
    except server_config.ConfigError as exc:
        problems, options = exc.problems, None
    logs.setup(options.log_level if options else "INFO", options.access_log if options else False,
               options.log_format if options else logs.TEXT)
    bundled, manifest = bundled_simulator(args, environ, bundle) if args.simulator else (None, None)
    admin_token = None
    if args.simulator and not environ.get("ADMIN_TOKEN"):
        admin_token = environ["ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    try:
        config = build_config(args, environ, bundled, manifest)
    except server_config.ConfigError as exc:
        problems += exc.problems
    if problems:
        raise server_config.ConfigError(problems)
    return options, config, bundled, admin_token


def start(args, environ, bundle=None):
    """Migrate, serve in one process or supervise several; errors raised."""
    if args.simulator and bundle is None:
        raise StartError("--simulator: the bundled simulator is not available here")
    check_processes(args, None)
    options, config, bundled, made_token = configure(args, environ, bundle)
    check_processes(args, config)
    if args.migrate:
        asyncio.run(migrate(config))
        print("Database %s is at the current schema" % describe_url(config.database_url), flush=True)
        return 0
    if args.processes > 1:
        return serve_several(args, options, config)
    supervisor.run(options.event_loop, serve(args, options, config, bundle, bundled, made_token=made_token))
    return 0


def main(argv=None, bundle=None):
    """run_server.py: its exit code (`run_server.py reconcile ...`: server/reconcile_cli.py's). `bundle`:
    simulator.bundle, which run_server.py (the one place that sees both server/ and simulator/)
    passes for --simulator."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reconcile"]:
        from server import reconcile_cli   # imported here: it imports this module
        return reconcile_cli.main(argv[1:])
    args = parse_args(argv, bundle)
    try:
        return start(args, dict(os.environ), bundle)
    except (server_config.ConfigError, StartError, StoreError) as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
    except CatalogError as exc:
        print("%s: CATALOG_FILE: %s" % (PROG, exc), file=sys.stderr)
    except OSError as exc:
        print("%s: cannot start: %s" % (PROG, exc.strerror or exc), file=sys.stderr)
    return 2
