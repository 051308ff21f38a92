#!/usr/bin/env python3
"""Run the offline WeChat simulator: login, Pay v2, notifications and the /sim/ control plane."""
import argparse
import asyncio
import errno
import logging
import signal
import sys

import tornado.httpserver
import tornado.netutil

from simulator import state as sim
from simulator.app import make_app
from simulator.handlers import MAX_BODY

PROG = "run_simulator.py"


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number: %r" % text)
    return value


def port_number(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535, not %d" % value)
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, epilog=(
        "Subcommand: '%s demo --backend URL' plays a Mini Program against a backend." % PROG))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=9000, help="0 picks a free port")
    p.add_argument("--appid", help="default: %s" % sim.DEMO_APPID)
    p.add_argument("--app-secret", help="the Mini Program AppSecret (default: the demo's)")
    p.add_argument("--mch-id", help="default: %s" % sim.DEMO_MCH_ID)
    p.add_argument("--api-key", help="the merchant API key, 32 characters (default: the demo's)")
    p.add_argument("--config", help="JSON file with several apps and merchants "
                   "(see SimConfig.from_file); excludes the four credential flags")
    p.add_argument("--time-scale", type=positive_float, default=1.0,
                   help="multiplies every WeChat duration: 0.001 turns 15 s into 15 ms")
    p.add_argument("--notify-timeout", type=positive_float, default=5.0,
                   help="seconds a notify_url has to answer (not scaled; default 5)")
    return p.parse_args(argv)


def build_config(args):
    flags = (args.appid, args.app_secret, args.mch_id, args.api_key)
    if args.config:
        if any(flag is not None for flag in flags):
            raise sim.ConfigError("--config cannot be combined with --appid, --app-secret, "
                                  "--mch-id or --api-key")
        return sim.SimConfig.from_file(args.config)
    return sim.SimConfig.single(args.appid or sim.DEMO_APPID, args.app_secret or sim.DEMO_SECRET,
                                args.mch_id or sim.DEMO_MCH_ID, args.api_key or sim.DEMO_API_KEY)


def banner(base, config, time_scale):
    lines = ["WeChat simulator listening on %s" % base,
             "  pay base URL    %s/  (sandbox: %s/sandboxnew/, %s/xdc/apiv2sandbox/)"
             % (base, base, base),
             "  login base URL  %s/  (GET /sns/jscode2session, GET /cgi-bin/token)" % base,
             "  control plane   %s/sim/" % base]
    for app in config.apps.values():
        lines.append("  app       appid=%s  secret=%s" % (app.appid, app.secret))
    for m in config.merchants.values():
        lines.append("  merchant  mch_id=%s  api_key=%s  appids=%s"
                     % (m.mch_id, m.api_key, ",".join(m.appids)))
    lines.append(time_scale_line(time_scale))
    return "\n".join(lines)


def time_scale_line(time_scale):
    if time_scale == 1:
        return "  time scale 1: real WeChat durations"
    return ("  time scale %g (not 1): code TTL %g s, prepay_id TTL %g s, first notify retry "
            "after %g s" % (time_scale, 300 * time_scale, 7200 * time_scale, 15 * time_scale))


def fail(message):
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    return 2


def listen(app, host, port):
    """Bind first, so a busy port is reported before anything is printed."""
    sockets = tornado.netutil.bind_sockets(port, host)
    server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


async def serve(args, config):
    state = sim.State(config, time_scale=args.time_scale)
    app = make_app(state, notify_timeout=args.notify_timeout)
    try:
        server, port = listen(app, args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return fail("port %d on %s is already in use (another simulator? try --port)"
                        % (args.port, args.host))
        return fail("cannot listen on %s:%d: %s" % (args.host, args.port, exc.strerror or exc))
    host = "[%s]" % args.host if ":" in args.host else args.host
    print(banner("http://%s:%d" % (host, port), config, args.time_scale), flush=True)
    await wait_for_signal()
    server.stop()
    app.sim_notifier.shutdown()
    try:
        await asyncio.wait_for(server.close_all_connections(), 5)
    except asyncio.TimeoutError:
        pass    # a client holding a connection open must not keep us alive
    print("WeChat simulator stopped", flush=True)
    return 0


async def wait_for_signal():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from simulator.demo import main as demo_main     # the lead's; needs the backend
        return demo_main(argv[1:])
    args = parse_args(argv)
    try:
        config = build_config(args)
    except sim.ConfigError as exc:
        return fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(serve(args, config))


if __name__ == "__main__":
    sys.exit(main())
