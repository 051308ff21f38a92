"""TLS: simulator.tls's files, and a real `run_simulator.py --tls` process with client
certificates on /secapi/."""
import os
import ssl
import stat

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from simulator import tls
from tests.support.processes import Proc, free_port
from tests.support.sim import (tls_simulator, DEMO_API_KEY, DEMO_MCH_ID, refund_fields, signed_xml,
                               wait_output)

pytestmark = pytest.mark.e2e


def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# --- tls.prepare ----------------------------------------------------------------------------

def test_prepare_creates_a_ca_server_and_merchant_certificate(tmp_path):
    files = tls.prepare(str(tmp_path / "t"), mch_id="1230000109")
    names = {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "merchant.pem",
             "merchant-key.pem"}
    assert set(os.listdir(tmp_path / "t")) == names
    assert (files.ca_cert, files.client_cert, files.client_key) == tuple(
        str(tmp_path / "t" / n) for n in ("ca.pem", "merchant.pem", "merchant-key.pem"))
    for key in (files.ca_key, files.server_key, files.client_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
        with open(key, "rb") as f:
            assert f.read().startswith(b"-----BEGIN PRIVATE KEY-----")
    ca, server, merchant = load(files.ca_cert), load(files.server_cert), load(files.client_cert)
    server.verify_directly_issued_by(ca)
    merchant.verify_directly_issued_by(ca)
    assert cn(merchant) == "1230000109"          # like WeChat's apiclient_cert
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(map(str, sans.get_values_for_type(x509.IPAddress))) == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ctx = tls.server_context(files)
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_OPTIONAL


def test_prepare_reuses_existing_files_and_reissues_what_no_longer_fits(tmp_path):
    directory = str(tmp_path / "t")
    files = tls.prepare(directory)
    before = {n: read(os.path.join(directory, n)) for n in os.listdir(directory)}
    assert tls.prepare(directory) == files
    after = {n: read(os.path.join(directory, n)) for n in os.listdir(directory)}
    assert after == before
    # Another mch_id: only the merchant certificate is issued again, by the same CA.
    tls.prepare(directory, mch_id="1999")
    assert read(files.ca_cert) == before["ca.pem"]
    assert read(files.server_cert) == before["server.pem"]
    assert cn(load(files.client_cert)) == "1999"
    # A lost CA key: a new CA, and every certificate issued again by it.
    os.unlink(files.ca_key)
    tls.prepare(directory)
    assert read(files.ca_cert) != before["ca.pem"]
    load(files.server_cert).verify_directly_issued_by(load(files.ca_cert))
    assert stat.S_IMODE(os.stat(files.ca_key).st_mode) == 0o600


def test_prepare_with_a_given_ca(tmp_path):
    ca_files = tls.prepare(str(tmp_path / "ca"))
    files = tls.prepare(str(tmp_path / "t"), ca_cert=ca_files.ca_cert, ca_key=ca_files.ca_key)
    assert (files.ca_cert, files.ca_key) == (ca_files.ca_cert, ca_files.ca_key)
    assert "ca.pem" not in os.listdir(tmp_path / "t")
    load(files.client_cert).verify_directly_issued_by(load(ca_files.ca_cert))
    with pytest.raises(tls.TLSError, match="not a CA certificate"):
        tls.prepare(str(tmp_path / "u"), ca_cert=files.server_cert, ca_key=files.server_key)
    with pytest.raises(tls.TLSError, match="does not belong"):
        tls.prepare(str(tmp_path / "u"), ca_cert=ca_files.ca_cert, ca_key=files.server_key)
    with pytest.raises(tls.TLSError, match="both"):
        tls.prepare(str(tmp_path / "u"), ca_cert=ca_files.ca_cert)


# --- a real run_simulator.py --tls ----------------------------------------------------------

@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory):
    with tls_simulator(str(tmp_path_factory.mktemp("sim-tls"))) as proc:
        yield proc


def refund_body(out_refund_no="TLS1"):
    return signed_xml(refund_fields(out_refund_no=out_refund_no, out_trade_no="NOSUCH"))


def requests_log(sim):
    return requests.get(sim.url + "/sim/requests", verify=sim.files.ca_cert,
                        timeout=5).json()["requests"]


def test_banner_names_the_https_url_and_the_files_for_the_backend(tls_sim):
    out = tls_sim.output()
    files = tls_sim.files
    assert "listening on https://127.0.0.1:%d" % tls_sim.port in out
    assert "%s   (backend: WECHAT_CA_FILE)" % files.ca_cert in out
    assert "cert %s   (WECHAT_CERT_FILE)" % files.client_cert in out
    assert "key  %s   (WECHAT_KEY_FILE)" % files.client_key in out
    assert "/secapi/ requires a client certificate" in out


def test_https_with_the_ca_and_only_with_it(tls_sim):
    ca = tls_sim.files.ca_cert
    for host in ("127.0.0.1", "localhost"):
        resp = requests.get("https://%s:%d/sim/config" % (host, tls_sim.port), verify=ca,
                            timeout=5)
        assert resp.status_code == 200 and resp.json()["merchants"][0]["mch_id"] == DEMO_MCH_ID
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_sim.url + "/sim/config", timeout=5)      # the system's trust store
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get("http://127.0.0.1:%d/sim/config" % tls_sim.port, timeout=5)


@pytest.mark.parametrize("prefix", ["", "/sandboxnew", "/xdc/apiv2sandbox"])
def test_secapi_without_a_client_certificate_is_refused(tls_sim, prefix):
    path = prefix + "/secapi/pay/refund"
    with pytest.raises(requests.exceptions.ConnectionError) as err:
        requests.post(tls_sim.url + path, data=refund_body(), verify=tls_sim.files.ca_cert,
                      timeout=5)
    # The handshake succeeded; the connection is closed unanswered, as at WeChat.
    assert not isinstance(err.value, requests.exceptions.SSLError)
    assert "closed connection without response" in str(err.value)
    entry = [e for e in requests_log(tls_sim) if e["path"] == path][-1]
    assert (entry["error"], entry["client_cert"]) == ("NO_CLIENT_CERT", "none")
    assert "client certificate" in entry["detail"] and entry["verdict"].startswith("error")


def test_secapi_with_the_merchant_certificate_is_accepted(tls_sim):
    files = tls_sim.files
    resp = requests.post(tls_sim.url + "/secapi/pay/refund/", data=refund_body("TLS2"),
                         verify=files.ca_cert, cert=(files.client_cert, files.client_key),
                         timeout=5)
    assert resp.status_code == 200
    assert b"<err_code><![CDATA[ORDERNOTEXIST]]></err_code>" in resp.content  # past the gate
    entry = [e for e in requests_log(tls_sim) if e["path"] == "/secapi/pay/refund/"][-1]
    assert (entry["client_cert"], entry["signature"], entry["error"]) == (
        "CN=%s" % DEMO_MCH_ID, "ok", "ORDERNOTEXIST")


def test_a_certificate_of_another_ca_is_refused(tls_sim, tmp_path):
    other = tls.prepare(str(tmp_path / "other"))          # same CN, different CA
    before = len(requests_log(tls_sim))
    # The server's alert "unknown ca" ends the TLS 1.3 handshake; depending on timing the
    # client reads the alert or an EOF: an SSLError either way (never an HTTP answer).
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(tls_sim.url + "/secapi/pay/refund", data=refund_body("TLS3"),
                      verify=tls_sim.files.ca_cert, cert=(other.client_cert, other.client_key),
                      timeout=5)
    assert len(requests_log(tls_sim)) == before       # refused in the handshake: no request


def test_another_merchants_certificate_is_a_cert_error(tls_sim, tmp_path):
    cert, key = tls.issue_merchant(tls_sim.files, "1999", directory=str(tmp_path))
    resp = requests.post(tls_sim.url + "/secapi/pay/refund", data=refund_body("TLS4"),
                         verify=tls_sim.files.ca_cert, cert=(cert, key), timeout=5)
    assert b"<err_code><![CDATA[CERT_ERROR]]></err_code>" in resp.content


def test_other_paths_need_no_client_certificate(tls_sim):
    ca = tls_sim.files.ca_cert
    code = requests.post(tls_sim.url + "/sim/login", json={"user": "tls"}, verify=ca,
                         timeout=5).json()
    fields = {"appid": "wxd930ea5d5a258f4f", "mch_id": DEMO_MCH_ID, "nonce_str": "n",
              "body": "tls", "out_trade_no": "TLS-ORDER", "total_fee": "1",
              "spbill_create_ip": "127.0.0.1", "notify_url": "http://127.0.0.1:9/n",
              "trade_type": "JSAPI", "openid": code["openid"]}
    resp = requests.post(tls_sim.url + "/pay/unifiedorder", data=signed_xml(fields), verify=ca,
                         timeout=5)
    assert b"<result_code><![CDATA[SUCCESS]]></result_code>" in resp.content
    resp = requests.post(tls_sim.url + "/pay/refundquery", verify=ca, timeout=5, data=signed_xml(
        {"appid": fields["appid"], "mch_id": DEMO_MCH_ID, "nonce_str": "q",
         "out_trade_no": "TLS-ORDER"}))
    assert b"REFUNDNOTEXIST" in resp.content


def test_tls_with_a_given_ca(tmp_path):
    ca_files = tls.prepare(str(tmp_path / "ca"))
    port = free_port()
    args = ["--port", str(port), "--tls", "--tls-dir", str(tmp_path / "t"),
            "--tls-ca-cert", ca_files.ca_cert, "--tls-ca-key", ca_files.ca_key]
    with Proc("run_simulator.py", args, port=port) as proc:
        out = wait_output(proc, "WECHAT_KEY_FILE")
        assert "%s   (backend: WECHAT_CA_FILE)" % ca_files.ca_cert in out
        resp = requests.get("https://localhost:%d/sim/config" % port, verify=ca_files.ca_cert,
                            timeout=5)
        assert resp.status_code == 200
    assert not os.path.exists(tmp_path / "t" / "ca.pem")


def test_plain_http_banner_says_secapi_has_no_certificate_check():
    port = free_port()
    with Proc("run_simulator.py", ["--port", str(port)], port=port) as proc:
        out = wait_output(proc, "no TLS")
        assert "/secapi/pay/refund works over plain HTTP WITHOUT a client certificate" in out
        resp = requests.post(proc.url + "/secapi/pay/refund", data=refund_body(), timeout=5)
        assert b"ORDERNOTEXIST" in resp.content


@pytest.mark.parametrize("args, needle", [
    (["--tls-ca-cert", "x.pem"], "--tls-ca-cert and --tls-ca-key go together"),
    (["--tls-ca-cert", "x.pem", "--tls-ca-key", "y.pem"], "need --tls"),
    (["--tls", "--tls-ca-cert", "/nonexistent/ca.pem", "--tls-ca-key", "/nonexistent/k.pem"],
     "/nonexistent/ca.pem: cannot read"),
    (["--refund-delay", "-1"], "must be a number of seconds >= 0"),
])
def test_bad_tls_flags_are_one_clear_line(args, needle, tmp_path):
    proc = Proc("run_simulator.py", ["--port", str(free_port()), "--tls-dir",
                                     str(tmp_path / "t")] + args, wait_port=False)
    with proc:
        code = proc.wait(20)
        out = proc.output()
    assert code == 2 and needle in out and "Traceback" not in out, out
    assert DEMO_API_KEY not in out
