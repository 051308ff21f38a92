"""The simulator's start-up banner: where it listens, the credentials it accepts, its TLS and v3 files."""
from simulator import hosts
from simulator.config import REFUND_DELAY
from simulator.models import DEVELOPER_USER
from simulator.rules import CODE_TTL, NOTIFY_SCHEDULE, PREPAY_TTL

PROG = "run_simulator.py"


def banner(base, config, time_scale, refund_delay=REFUND_DELAY, tls_files=None,
           merchant_certs=None, accept_unknown_codes=False, seed=None,
           notify_sign_type_probability=0.0, v3=None, host_policy=None):
    lines = ["WeChat simulator listening on %s" % base,
             "  pay base URL    %s/  (sandbox: %s/sandboxnew/, %s/xdc/apiv2sandbox/)"
             % (base, base, base),
             "  login base URL  %s/  (GET /sns/jscode2session, GET /cgi-bin/token)" % base,
             "  control plane   %s/sim/" % base,
             "  console         %s/sim/console" % base,
             "  /sim/ hosts     %s; other Host names get 403 (--allow-host adds one)"
             % (host_policy or hosts.HostPolicy()).describe()]
    for app in config.apps.values():
        lines.append("  app       appid=%s  secret=%s" % (app.appid, app.secret))
    for m in config.merchants.values():
        lines.append("  merchant  mch_id=%s  api_key=%s  appids=%s"
                     % (m.mch_id, m.api_key, ",".join(m.appids)))
    lines.append(time_scale_line(time_scale))
    if seed is not None:
        lines.append("  faults    random draws seeded with %d: the same requests fire the same "
                     "faults" % seed)
    if notify_sign_type_probability:
        lines.append("  notify    %g of payment notifications carry a signed sign_type field"
                     % notify_sign_type_probability)
    lines.append("  refunds   PROCESSING for %g s, then SUCCESS (or what POST /sim/refunds/<no> "
                 "chooses)" % (refund_delay * time_scale))
    lines.extend(tls_lines(tls_files, merchant_certs or {}))
    if v3 is not None:
        lines.extend(v3_lines(base, v3))
    lines.append(login_line(accept_unknown_codes))
    return "\n".join(lines)


def login_line(accept_unknown_codes):
    if accept_unknown_codes:
        return ("  login     developer mode: a code this simulator never issued (wx.login in WeChat "
                "DevTools) is taken once, as user %r" % DEVELOPER_USER)
    return ("  login     only codes from POST /sim/login, once each, for %g minutes (WeChat's rules)"
            % (CODE_TTL / 60))


def tls_lines(files, merchant_certs):
    if files is None:
        return ["  no TLS: /secapi/pay/refund works over plain HTTP WITHOUT a client certificate "
                "(real WeChat requires HTTPS and the merchant's apiclient_cert; run with --tls "
                "to test that)"]
    lines = ["  TLS: HTTPS only; /secapi/ requires a client certificate issued by this CA "
             "(without one the connection is closed unanswered, as at WeChat)",
             "  CA certificate  %s   (backend: WECHAT_CA_FILE)" % files.ca_cert]
    for mch_id, (cert, key) in merchant_certs.items():
        lines.append("  merchant %s  cert %s   (WECHAT_CERT_FILE)" % (mch_id, cert))
        lines.append("  merchant %s  key  %s   (WECHAT_KEY_FILE)" % (mch_id, key))
    return lines


def time_scale_line(time_scale):
    if time_scale == 1:
        return "  time scale 1: real WeChat durations"
    return ("  time scale %g (not 1): code TTL %g s, prepay_id TTL %g s, first notify retry "
            "after %g s" % (time_scale, CODE_TTL * time_scale, PREPAY_TTL * time_scale,
                            NOTIFY_SCHEDULE[0] * time_scale))


def v3_lines(base, v3):
    merchant = next(iter(v3.merchants.values()))
    lines = ["  API v3    %s/v3/...  key mode %s: %s" % (base, v3.key_mode, {
        "public-key": "answers and notifications signed with the WeChat Pay public key",
        "certificate": "signed with the platform certificate (GET /v3/certificates)",
        "migration": "answers signed with the key the request's Wechatpay-Serial names "
                     "(else the certificate), notifications with both, alternating",
    }[v3.key_mode]),
             "  v3 merchant   mchid=%s  serial_no=%s  apiv3_key=%s"
             % (merchant.mchid, merchant.serial_no, merchant.apiv3_key)]
    if merchant.private_key_file:
        lines.append("  v3 merchant key   %s   (demo, generated: WECHAT_MCH_PRIVATE_KEY_FILE)"
                     % merchant.private_key_file)
    if merchant.certificate_file:
        lines.append("  v3 merchant cert  %s" % merchant.certificate_file)
    lines += ["  WeChat Pay public key   %s   id %s" % (v3.wechatpay_public_key_file,
                                                      v3.public_key_id),
              "  platform certificate    %s   serial %s" % (v3.platform_cert_file,
                                                         v3.platform_serial),
              "  v3 manifest   %s   (public material: GET %s/sim/v3/keys)"
              % (v3.manifest_file, base)]
    return lines


def settings_line(ready_file):
    line = ("  settings  `%s env <same options>` prints the backend's settings for this simulator "
            "(--format sh|dotenv|json)" % PROG)
    return line + ("; they are in the ready file %s too" % ready_file if ready_file else "")
