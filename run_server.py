"""Run the payment backend: flags + environment -> Config -> make_app() -> listen."""
import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys

import tornado.httpserver

from server import config as server_config
from server.app import make_app
from server.catalog import CatalogError
from server.store import StoreError

log = logging.getLogger("run_server")
DRAIN_SECONDS = 10.0


def parse_args(argv):
    p = argparse.ArgumentParser(description="WeChat Mini Program payment backend.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--simulator", action="store_true",
                   help="run the bundled WeChat simulator in this process, with the demo credentials")
    p.add_argument("--simulator-port", type=int, default=9000)
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="with --simulator: scale the simulator's WeChat durations")
    p.add_argument("--simulator-tls-dir", default="sim-tls",
                   help="with --simulator: where the simulator's CA and the merchant certificate are kept")
    p.add_argument("--database-url", help="overrides DATABASE_URL")
    p.add_argument("--sign-type", choices=["MD5", "HMAC-SHA256"], help="overrides WECHAT_SIGN_TYPE")
    p.add_argument("--notify-url", help="overrides WECHAT_NOTIFY_URL")
    p.add_argument("--sweep-interval", type=float, default=float(os.environ.get("SWEEP_INTERVAL", "60")),
                   help="seconds between background orderquery/refundquery sweeps for missing "
                        "notifications (SWEEP_INTERVAL; 0 turns it off)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    p.add_argument("--access-log", action="store_true", default=os.environ.get("ACCESS_LOG") == "1",
                   help="log every request (ACCESS_LOG=1); by default only 4xx/5xx answers are logged")
    p.add_argument("--xheaders", action="store_true", default=os.environ.get("TRUST_PROXY_HEADERS") == "1",
                   help="behind a reverse proxy: take the client address from X-Real-IP / "
                        "X-Forwarded-For (TRUST_PROXY_HEADERS=1)")
    return p.parse_args(argv)


def build_config(args, environ, tls_files=None):
    overrides = {"database_url": args.database_url, "sign_type": args.sign_type,
                 "notify_url": args.notify_url}
    if args.simulator:
        sim = "https://127.0.0.1:%d" % args.simulator_port
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        overrides.update(
            appid=server_config.DEMO_APPID, app_secret=server_config.DEMO_APP_SECRET,
            mch_id=server_config.DEMO_MCH_ID, api_key=server_config.DEMO_API_KEY,
            login_base_url=sim, pay_base_url=sim,
            notify_url=args.notify_url or "http://%s:%d/wechat/pay/notify" % (host, args.port),
            refund_notify_url=None, ca_file=tls_files.ca_cert, cert_file=tls_files.client_cert,
            key_file=tls_files.client_key)
    return server_config.Config.from_env(environ, overrides)


def setup_logging(level, access_log):
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not access_log:  # a line per request is the proxy's job; errors are still logged
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
        logging.getLogger("simulator.access").setLevel(logging.WARNING)


def simulator_tls(args):
    """The simulator's CA, server and merchant certificates (simulator/ is imported only here:
    server/ never imports it)."""
    from simulator import tls
    return tls.prepare(args.simulator_tls_dir, mch_id=server_config.DEMO_MCH_ID)


def start_simulator(args, tls_files):
    """The bundled simulator on --simulator-port, HTTPS, /secapi/ requiring the merchant certificate."""
    from simulator import tls
    from simulator.app import make_app as make_sim_app
    from simulator.state import SimConfig, State
    sim_app = make_sim_app(State(SimConfig.demo(), time_scale=args.time_scale))
    sim_app.listen(args.simulator_port, "127.0.0.1", ssl_options=tls.server_context(tls_files))
    print("WeChat simulator on https://127.0.0.1:%d (demo credentials; CA %s)" % (
        args.simulator_port, tls_files.ca_cert), flush=True)
    return sim_app


async def serve(args, config, tls_files=None):
    app = make_app(config)
    await app.service.store.open()
    sim_app = start_simulator(args, tls_files) if args.simulator else None
    server = tornado.httpserver.HTTPServer(app, xheaders=args.xheaders, max_body_size=1024 * 1024)
    server.listen(args.port, args.host, backlog=1024)  # flash sales open many connections at once
    print("Backend on http://%s:%d (notify URL %s, sign type %s, database %s)" % (
        args.host, args.port, config.notify_url, config.sign_type, config.database_url), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(sweep_forever(app.service, args.sweep_interval, stop))
    await stop.wait()
    log.info("shutting down: no new connections, draining requests in flight")
    server.stop()
    await sweeper
    await drain(app)
    if sim_app is not None:
        sim_app.sim_notifier.shutdown()
    app.service.wechat.close()
    await app.service.store.close()
    log.info("stopped")


async def sweep_forever(service, interval, stop):
    """Every `interval` seconds, ask WeChat about orders and refunds whose notification is late."""
    while interval > 0 and not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            try:
                await service.sweep()
            except Exception:  # a sweep must never end the server; the next one tries again
                log.exception("sweep failed")


async def drain(app, timeout=DRAIN_SECONDS):
    deadline = asyncio.get_running_loop().time() + timeout
    while app.inflight and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.log_level, args.access_log)
    try:
        tls_files = simulator_tls(args) if args.simulator else None
        environ = dict(os.environ)
        if args.simulator and not environ.get("ADMIN_TOKEN"):
            environ["ADMIN_TOKEN"] = secrets.token_urlsafe(24)
            print("Admin API token for this run (set ADMIN_TOKEN to choose one): %s" % environ["ADMIN_TOKEN"],
                  flush=True)
        config = build_config(args, environ, tls_files)
        asyncio.run(serve(args, config, tls_files))
    except (server_config.ConfigError, CatalogError, StoreError) as exc:
        print("run_server.py: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("run_server.py: cannot start: %s" % (exc.strerror or exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
