"""`run_simulator.py env [the simulator's options] [--format sh|dotenv|json]`: the backend's settings for that simulator."""
import ssl
import sys

from simulator import clientenv, cli, tls
from simulator.config import ConfigError
from simulator.v3 import keys as v3keys

PROG = "run_simulator.py env"


def build_parser():
    p = cli.build_parser(PROG)
    p.description = ("Print the settings a backend (run_server.py's names) needs for a simulator "
                     "started with the same options: its credentials and URL, with --tls its CA "
                     "and the merchant's client certificate, with --pay-version v3 its v3 keys "
                     "(made in --v3-dir now, as the simulator would, so that it then uses the "
                     "same). With --ready-file PATH: the settings of the simulator serving with "
                     "that ready file (the way to learn a --port 0 simulator's port).")
    p.epilog = 'Use: eval "$(%s ...)" in sh; --format dotenv for a .env file.' % PROG
    p.add_argument("--format", choices=clientenv.FORMATS, default="sh",
                   help="sh (default): export NAME='value' lines; dotenv: NAME=value lines; "
                   "json: one object")
    return p


def settings_for(args):
    """{variable: value}; ConfigError and the preparation's errors say why not."""
    if args.ready_file:
        return clientenv.read_ready(args.ready_file)
    if args.port == 0:
        raise ConfigError("--port 0: the simulator picks its port when it starts; start it with "
                          "--ready-file PATH, then run env --ready-file PATH")
    config, tls_files, _, v3 = cli.prepare(args, with_v3=args.pay_version == "v3")
    return cli.client_settings(args, args.port, config, tls_files, v3)


def main(argv):
    args = build_parser().parse_args(argv)
    try:
        values = settings_for(args)
    except (ConfigError, tls.TLSError, v3keys.V3Error, clientenv.ReadyError, ssl.SSLError) as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    sys.stdout.write(clientenv.render(values, args.format))
    return 0
