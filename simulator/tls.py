"""TLS for the simulator: a local certificate authority, the server's certificate and the
merchant's client certificate (WeChat's apiclient_cert.pem / apiclient_key.pem), all offline.

    from simulator import tls
    files = tls.prepare(directory, mch_id="10000100", ca_cert=None, ca_key=None)
    ctx = tls.server_context(files)     # HTTPServer(app, ssl_options=ctx)

prepare() creates in `directory`, or reuses when they exist and still fit: ca.pem and
ca-key.pem (unless a CA is given), server.pem and server-key.pem (SAN 127.0.0.1, localhost,
::1), merchant.pem and merchant-key.pem (CN = mch_id, like WeChat's apiclient_cert). All
PEM; private keys are unencrypted PKCS#8 written with mode 0600. A certificate is issued
again when it is missing, unreadable, not issued by the CA, expiring within a day, or no
longer matches (key, CN, SAN).

server_context() answers with the server certificate and asks every client for a
certificate (CERT_OPTIONAL): a certificate that the CA did not issue fails the handshake;
none at all is allowed by TLS, and the handlers decide per path (/secapi/ needs one).
"""
import dataclasses
import datetime
import functools
import ipaddress
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=1)
KEY_BITS = 2048
SERVER_HOSTS = ("127.0.0.1", "localhost", "::1")
ORGANIZATION = "WeChat Pay simulator (offline, not Tencent)"


class TLSError(Exception):
    """A CA or certificate that cannot be used; str() is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """Absolute paths of the PEM files prepare() created, reused or was given (the CA)."""
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def prepare(directory, mch_id="10000100", ca_cert=None, ca_key=None, hosts=()):
    """Create or reuse the CA, server and merchant certificates in directory.

    ca_cert/ca_key: an existing CA (PEM files; both or neither) to issue from instead of
    the directory's own ca.pem/ca-key.pem. hosts: more names or IP addresses for the server
    certificate's SAN, besides 127.0.0.1, localhost and ::1.
    """
    if (ca_cert is None) != (ca_key is None):
        raise TLSError("give both the CA certificate and its key, or neither")
    directory = os.path.abspath(directory)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise TLSError("%s: cannot create the directory: %s" % (directory, exc.strerror)) from None
    if ca_cert is not None:
        ca_cert, ca_key = os.path.abspath(ca_cert), os.path.abspath(ca_key)
        ca = _load_given_ca(ca_cert, ca_key)
    else:
        ca_cert, ca_key = (os.path.join(directory, "ca.pem"),
                           os.path.join(directory, "ca-key.pem"))
        ca = _own_ca(ca_cert, ca_key)
    hosts = tuple(dict.fromkeys(SERVER_HOSTS + tuple(h for h in hosts if h)))
    server = _leaf(directory, "server", ca, _server_profile(hosts))
    client = _leaf(directory, "merchant", ca, _client_profile(str(mch_id)))
    return TLSFiles(ca_cert, ca_key, server[0], server[1], client[0], client[1])


def issue_merchant(files, mch_id, directory=None):
    """(cert, key) paths of a client certificate for another merchant of the same CA:
    merchant-<mch_id>.pem and merchant-<mch_id>-key.pem beside the server certificate."""
    directory = directory or os.path.dirname(files.server_cert)
    ca = _load_given_ca(files.ca_cert, files.ca_key)
    return _leaf(directory, "merchant-%s" % mch_id, ca, _client_profile(str(mch_id)))


def server_context(files):
    """ssl.SSLContext for HTTPServer(ssl_options=...): the server certificate, and client
    certificates verified against the CA (CERT_OPTIONAL: the handler decides per path)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.server_cert, files.server_key)
    ctx.load_verify_locations(cafile=files.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(files, with_cert=True):
    """ssl.SSLContext for a client of the simulator: trusts the CA, presents the merchant
    certificate (with_cert) like a backend calling /secapi/."""
    ctx = ssl.create_default_context(cafile=files.ca_cert)
    if with_cert:
        ctx.load_cert_chain(files.client_cert, files.client_key)
    return ctx


# --- the CA -----------------------------------------------------------------------------

@dataclasses.dataclass
class _CA:
    cert: x509.Certificate
    key: object


def _own_ca(cert_path, key_path):
    try:
        ca = _load_ca(cert_path, key_path)
    except TLSError:
        ca = None
    if ca is not None and _fresh(ca.cert):
        return ca
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, "WeChat simulator local CA")])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return _CA(cert, key)


def _load_given_ca(cert_path, key_path):
    ca = _load_ca(cert_path, key_path)
    if not _fresh(ca.cert):
        raise TLSError("%s: the CA certificate has expired (or expires within a day)" % cert_path)
    return ca


def _load_ca(cert_path, key_path):
    cert = _read_cert(cert_path)
    key = _read_key(key_path)
    if not _same_key(cert, key):
        raise TLSError("%s: this key does not belong to the CA certificate %s"
                       % (key_path, cert_path))
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TLSError("%s: not a CA certificate (basicConstraints CA:TRUE missing)" % cert_path)
    return _CA(cert, key)


# --- leaf certificates ------------------------------------------------------------------

def _server_profile(hosts):
    sans = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return {"cn": "localhost", "sans": sans, "usage": ExtendedKeyUsageOID.SERVER_AUTH,
            "ou": "WeChat simulator server"}


def _client_profile(mch_id):
    # WeChat's apiclient_cert: CN = the mch_id, OU = Tenpay.com.
    return {"cn": mch_id, "sans": [], "usage": ExtendedKeyUsageOID.CLIENT_AUTH,
            "ou": "Tenpay.com"}


def _leaf(directory, stem, ca, profile):
    cert_path = os.path.join(directory, stem + ".pem")
    key_path = os.path.join(directory, stem + "-key.pem")
    if _reusable(cert_path, key_path, ca, profile):
        return cert_path, key_path
    key = _new_key()
    now = _now()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, profile["ou"]),
                         x509.NameAttribute(NameOID.COMMON_NAME, profile["cn"])])
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(min(now + datetime.timedelta(days=LEAF_DAYS),
                                    ca.cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                            key_cert_sign=False, crl_sign=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([profile["usage"]]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.cert.public_key()), critical=False))
    if profile["sans"]:
        builder = builder.add_extension(x509.SubjectAlternativeName(profile["sans"]),
                                        critical=False)
    _write_key(key_path, key)
    _write_cert(cert_path, builder.sign(ca.key, hashes.SHA256()))
    return cert_path, key_path


def _reusable(cert_path, key_path, ca, profile):
    try:
        cert, key = _read_cert(cert_path), _read_key(key_path)
    except TLSError:
        return False
    if not (_same_key(cert, key) and _fresh(cert) and _issued_by(cert, ca.cert)):
        return False
    if _cn(cert) != profile["cn"]:
        return False
    if profile["sans"]:
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        if not set(profile["sans"]) <= set(sans):
            return False
    return True


def _issued_by(cert, ca_cert):
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- small helpers ----------------------------------------------------------------------

def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _fresh(cert):
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _cn(cert):
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else ""


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _same_key(cert, key):
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _read_cert(path):
    data = _read(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TLSError("%s: not a PEM certificate" % path) from None


def _read_key(path):
    data = _read(path)
    try:
        return parse_private_key(data)
    except (ValueError, TypeError):
        raise TLSError("%s: not an unencrypted PEM private key" % path) from None


@functools.lru_cache(maxsize=16)
def parse_private_key(data):
    """A PEM private key's bytes -> the key, parsed once per content. OpenSSL's RSA consistency
    check (~37 ms of CPU a key, several keys at each start) is skipped: these are the keys the
    simulator made itself in its own directories (or a developer's TLS key), and a broken one
    shows at once as a failed handshake or signature, which the tests and SDKs check."""
    return serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSError("%s: cannot read: %s" % (path, exc.strerror)) from None


def _write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_file(path, data, 0o600)


def _write_cert(path, cert):
    write_file(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_file(path, data, mode):
    """Atomically: a temporary file with the final mode from the start, then a rename."""
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)   # created 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise TLSError("%s: cannot write: %s" % (path, exc.strerror)) from None
