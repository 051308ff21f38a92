"""The simulator bundled into run_server.py --simulator: its files prepared, the backend settings to use, served."""
from simulator import hosts, tls
from simulator.v3 import keys as v3keys
from simulator.app import make_app, make_server
from simulator.config import DEMO, DEMO_APIV3_KEY, DEMO_APPID, DEMO_MCH_ID, SimConfig
from simulator.state import State


class BundleError(Exception):
    """A reason the bundled simulator cannot start, in one line."""


def allowed_name(text):
    """A name the bundled simulator's /sim/ answers under; ValueError saying why not."""
    return hosts.allowed_name(text)


class Bundled:
    """What the bundled simulator is started with: its TLS files (simulator/tls.py), and in v3
    its keys (simulator.v3keys.V3Setup), whose manifest, DIR/v3.json, the backend reads."""

    def __init__(self, tls_files, v3=None):
        self.tls, self.v3 = tls_files, v3
        self.manifest_file = v3.manifest_file if v3 else None
        self.appid = DEMO["appid"]

    def settings(self, base_url):
        """The backend's settings (its Config fields) for this simulator at base_url: the demo
        app and merchant, the simulator's CA and the merchant's client certificate."""
        return dict(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                    api_key=DEMO["api_key"], login_base_url=base_url, pay_base_url=base_url,
                    ca_file=self.tls.ca_cert, cert_file=self.tls.client_cert, key_file=self.tls.client_key)


def prepare(tls_dir, v3_dir=None, key_mode=None):
    """Make (first start) or load the CA, server and merchant certificates in tls_dir and, with
    v3_dir, the v3 keys for the demo merchant in key_mode (writing the manifest DIR/v3.json)."""
    tls_files = tls.prepare(tls_dir, mch_id=DEMO["mch_id"])
    if v3_dir is None:
        return Bundled(tls_files)
    try:
        setup = v3keys.prepare(v3_dir, DEMO_MCH_ID, DEMO_APPID, DEMO_APIV3_KEY, key_mode)
    except v3keys.V3Error as exc:
        raise BundleError(str(exc)) from None
    return Bundled(tls_files, setup)


def start(bundled, sockets, port, time_scale=1.0, allow_hosts=()):
    """Serve on the bound sockets over HTTPS, /secapi/ requiring the merchant certificate; in
    v3 serving API v3 too, with the keys prepare() made. The app (its shutdown() stops it)."""
    # developer mode: WeChat DevTools' wx.login codes were issued by Tencent, not by us
    sim_app = make_app(State(SimConfig.demo(), time_scale=time_scale, accept_unknown_codes=True,
                             v3=bundled.v3), allow_hosts=allow_hosts,
                       pay_version="v3" if bundled.v3 else "v2")
    make_server(sim_app, ssl_options=tls.server_context(bundled.tls)).add_sockets(sockets)
    print("WeChat simulator on https://127.0.0.1:%d (console https://127.0.0.1:%d/sim/console; demo "
          "credentials; CA %s; login codes it never issued are taken as the developer user)"
          % (port, port, bundled.tls.ca_cert), flush=True)
    if bundled.v3:
        print("WeChat Pay API v3 at the simulator: key mode %s; its keys and manifest in %s"
              % (bundled.v3.key_mode, bundled.v3.manifest_file), flush=True)
    return sim_app
