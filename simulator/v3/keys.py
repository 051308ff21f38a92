"""API v3 key material (--v3-dir): WeChat's side (the WeChat Pay public key with its
PUB_KEY_ID_, the platform certificate), the merchant's API certificate (a demo key pair made on
first start unless one is configured) and the manifest v3.json, all offline.

    from simulator.v3 import keys as v3keys
    setup = v3keys.prepare("sim-v3", mchid="10000100", appid="wx...", apiv3_key="<32 chars>")

prepare() creates in the directory, or reuses when they exist and still fit:
wechatpay_private_key.pem / wechatpay_public_key.pem (the WeChat Pay public key pair),
platform_private_key.pem and platform-certs/platform_cert.pem (the platform certificate, valid
5 years, reissued with a new serial when expiring within a day), and, unless the merchant's
certificate or public key is configured, apiclient_key.pem / apiclient_cert.pem (the demo
merchant). Private keys are unencrypted PKCS#8 written with mode 0600. The WeChat-side private
keys are the simulator's own secrets: nothing answers them. v3.json (mode 0600: it holds the
APIv3 key) says where everything is, for a backend or an SDK to read.
"""
import dataclasses
import datetime
import json
import os
import re
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from simulator import tls
from simulator.v3 import wire as v3wire

KEY_MODES = ("public-key", "certificate", "migration")
MANIFEST = "v3.json"
KEY_BITS = 2048
PLATFORM_DAYS = 5 * 365          # WeChat's platform certificates live five years
MERCHANT_DAYS = 5 * 365
RENEW_BEFORE = datetime.timedelta(days=1)
ORGANIZATION = "WeChat Pay simulator (offline, not Tencent)"
_SERIAL = re.compile(r"^[0-9A-Fa-f]{1,64}$")
_PUBLIC_KEY_ID = re.compile(r"^PUB_KEY_ID_[0-9A-Za-z_]{1,64}$")


class V3Error(Exception):
    """Unusable v3 configuration or files; str() is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class MerchantKey:
    """What WeChat knows of a merchant in v3: its API certificate's serial and public key,
    and the APIv3 key it set in the merchant platform."""
    mchid: str
    appid: str
    serial_no: str
    public_key: object
    apiv3_key: str
    private_key_file: str = ""      # only for the demo merchant the simulator generated
    certificate_file: str = ""


@dataclasses.dataclass(frozen=True)
class V3Setup:
    """The v3 keys the simulator serves with. key_mode: public-key (answers and notifications
    signed with the WeChat Pay public key's private half, Wechatpay-Serial = its PUB_KEY_ID_),
    certificate (signed with the platform certificate's key, Wechatpay-Serial = its serial;
    GET /v3/certificates serves it) or migration (answers signed with the key the request's
    Wechatpay-Serial names, notifications with both, alternating)."""
    key_mode: str
    directory: str
    public_key_id: str
    wechatpay_key: object           # private: signs in public-key mode
    wechatpay_public_key_file: str
    platform_key: object            # private: signs in certificate mode
    platform_cert: object
    platform_cert_file: str
    merchants: dict                 # mchid -> MerchantKey
    manifest_file: str

    @property
    def platform_serial(self):
        return v3wire.serial_hex(self.platform_cert)

    def merchant(self, mchid):
        return self.merchants.get(mchid)

    def signing_key(self, kind):
        """(Wechatpay-Serial, private key) of "public-key" or "certificate"."""
        if kind == "certificate":
            return self.platform_serial, self.platform_key
        return self.public_key_id, self.wechatpay_key

    def answer_signer(self, requested_serial):
        """Which key signs an API answer: "public-key" or "certificate".

        During a migration (WeChat's guide "平台证书切换为微信支付公钥") WeChat answers with the
        key the request's Wechatpay-Serial names: the merchant's public key id selects the
        public key; a platform certificate serial or no header, the platform certificate
        (WeChat Pay's staff on the developer community: the merchant controls the answers'
        share through that header, notifications switch on WeChat's own schedule). A serial
        WeChat does not know (another merchant's public key id, a retired certificate) is not
        the public key id, so the platform certificate too (WeChat refuses an unknown serial on
        APIs with encrypted fields, where it names the encrypting key; none is simulated). Without a
        migration the header changes nothing: a public-key merchant has no certificate, and
        one that never started the move is answered with the certificate even when it names
        the public key.
        """
        if self.key_mode == "migration":
            named_public_key = (requested_serial or "").strip() == self.public_key_id
            return "public-key" if named_public_key else "certificate"
        return "certificate" if self.key_mode == "certificate" else "public-key"

    def serves_certificates(self):
        """Whether GET /v3/certificates has a certificate (not in pure public-key mode)."""
        return self.key_mode != "public-key"

    def public_json(self):
        """What GET /sim/v3/keys shows: public material and file paths, no secret."""
        merchant = next(iter(self.merchants.values()))
        return {
            "key_mode": self.key_mode, "mchid": merchant.mchid, "appid": merchant.appid,
            "merchant_serial_no": merchant.serial_no,
            "merchant_certificate_file": merchant.certificate_file or None,
            "wechatpay_public_key_id": self.public_key_id,
            "wechatpay_public_key": v3wire.public_pem(self.wechatpay_key),
            "wechatpay_public_key_file": self.wechatpay_public_key_file,
            "platform_serial_no": self.platform_serial,
            "platform_certificate": self.platform_cert.public_bytes(
                serialization.Encoding.PEM).decode("ascii"),
            "platform_certificate_file": self.platform_cert_file,
            "platform_certificate_dir": os.path.dirname(self.platform_cert_file),
            "platform_certificate_expire_time": v3wire.rfc3339(
                self.platform_cert.not_valid_after_utc.timestamp()),
            "manifest_file": self.manifest_file,
        }

    def manifest(self):
        """The contents of DIR/v3.json (the shared brief's interface with the backend)."""
        merchant = next(iter(self.merchants.values()))
        data = {"mchid": merchant.mchid, "appid": merchant.appid,
                "apiv3_key": merchant.apiv3_key, "merchant_serial_no": merchant.serial_no}
        if merchant.private_key_file:
            data["merchant_private_key_file"] = merchant.private_key_file
        if merchant.certificate_file:
            data["merchant_certificate_file"] = merchant.certificate_file
        data.update({"key_mode": self.key_mode, "wechatpay_public_key_id": self.public_key_id,
                     "wechatpay_public_key_file": self.wechatpay_public_key_file,
                     "platform_serial_no": self.platform_serial,
                     "platform_certificate_file": self.platform_cert_file})
        return data


def prepare(directory, mchid, appid, apiv3_key, key_mode="public-key", public_key_id=None,
            merchant_cert=None, merchant_public_key=None, merchant_serial=None):
    """Create or reuse the v3 material in directory and write its manifest; V3Setup.

    merchant_cert (a PEM certificate file), or merchant_public_key (a PEM public key file)
    with merchant_serial: the merchant's API certificate as configured; neither: the demo
    merchant's key pair and certificate, generated on first start.
    """
    from simulator.config import DEMO_PUBLIC_KEY_ID
    public_key_id = public_key_id or DEMO_PUBLIC_KEY_ID
    _check_args(key_mode, apiv3_key, public_key_id, merchant_cert, merchant_public_key,
                merchant_serial)
    directory = os.path.abspath(directory)
    _mkdir(directory)
    _mkdir(os.path.join(directory, "platform-certs"))
    wechatpay_key = _own_key(os.path.join(directory, "wechatpay_private_key.pem"))
    public_file = os.path.join(directory, "wechatpay_public_key.pem")
    _write(public_file, v3wire.public_pem(wechatpay_key).encode("ascii"), 0o644)
    platform_key = _own_key(os.path.join(directory, "platform_private_key.pem"))
    platform_file = os.path.join(directory, "platform-certs", "platform_cert.pem")
    platform_cert = _own_cert(platform_file, platform_key, "WeChat Pay platform (simulator)",
                              PLATFORM_DAYS)
    merchant = _merchant(directory, mchid, appid, apiv3_key, merchant_cert,
                         merchant_public_key, merchant_serial)
    setup = V3Setup(key_mode, directory, public_key_id, wechatpay_key, public_file,
                    platform_key, platform_cert, platform_file, {mchid: merchant},
                    os.path.join(directory, MANIFEST))
    _write(setup.manifest_file, (json.dumps(setup.manifest(), indent=2) + "\n").encode("utf-8"),
           0o600)
    return setup


def check_apiv3_key(key, where="the APIv3 key"):
    if not (isinstance(key, str) and len(key) == 32 and key.isascii() and key.isprintable()
            and " " not in key):
        raise V3Error("%s must be 32 printable ASCII characters (it is the AES-256 key the "
                      "merchant set in the merchant platform)" % where)


def _check_args(key_mode, apiv3_key, public_key_id, merchant_cert, merchant_public_key,
                merchant_serial):
    if key_mode not in KEY_MODES:
        raise V3Error("the v3 key mode must be one of %s, not %r"
                      % (", ".join(KEY_MODES), key_mode))
    check_apiv3_key(apiv3_key)
    if not _PUBLIC_KEY_ID.match(public_key_id or ""):
        raise V3Error("the WeChat Pay public key id must look like PUB_KEY_ID_<digits>, not %r"
                      % (public_key_id,))
    if merchant_cert and (merchant_public_key or merchant_serial):
        raise V3Error("--v3-merchant-cert excludes --v3-merchant-public-key and "
                      "--v3-merchant-serial (the certificate carries both)")
    if bool(merchant_public_key) != bool(merchant_serial):
        raise V3Error("--v3-merchant-public-key and --v3-merchant-serial go together")
    if merchant_serial and not _SERIAL.match(merchant_serial):
        raise V3Error("--v3-merchant-serial must be the certificate serial in hex, not %r"
                      % merchant_serial)


def _merchant(directory, mchid, appid, apiv3_key, cert_file, public_key_file, serial):
    if cert_file:
        cert_file = os.path.abspath(cert_file)
        cert = _read_cert(cert_file)
        return MerchantKey(mchid, appid, v3wire.serial_hex(cert), cert.public_key(),
                           apiv3_key, certificate_file=cert_file)
    if public_key_file:
        public_key = _read_public_key(os.path.abspath(public_key_file))
        return MerchantKey(mchid, appid, serial.upper(), public_key, apiv3_key)
    key_file = os.path.join(directory, "apiclient_key.pem")
    cert_file = os.path.join(directory, "apiclient_cert.pem")
    key = _own_key(key_file)
    cert = _own_cert(cert_file, key, str(mchid), MERCHANT_DAYS, unit="Tenpay.com")
    return MerchantKey(mchid, appid, v3wire.serial_hex(cert), cert.public_key(), apiv3_key,
                       private_key_file=key_file, certificate_file=cert_file)


# --- keys and certificates --------------------------------------------------------------
def new_serial():
    """A positive 160-bit-wide serial whose hex is exactly 40 characters, like WeChat's."""
    return secrets.randbits(156) | (1 << 156)


def _own_key(path):
    """The key in path, or a new one written there when there is none."""
    if not os.path.exists(path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        _write(path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
        return key
    try:
        key = tls.parse_private_key(_read(path))
    except (ValueError, TypeError):
        raise V3Error("%s: not an unencrypted PEM private key (delete it to have a new one "
                      "made)" % path) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_BITS:
        raise V3Error("%s: not a 2048-bit RSA key (delete it to have a new one made)" % path)
    return key


def _own_cert(path, key, common_name, days, unit="Tenpay.com"):
    """The certificate in path when it is key's and fresh; else a new self-signed one."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path))
    except (V3Error, ValueError):
        cert = None
    if cert is not None and _fits(cert, key, common_name):
        return cert
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(new_serial())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def _fits(cert, key, common_name):
    now = datetime.datetime.now(datetime.timezone.utc)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return (cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
            and cert.not_valid_before_utc <= now
            and cert.not_valid_after_utc - RENEW_BEFORE > now
            and names and names[0].value == common_name)


def _read_cert(path):
    try:
        cert = x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise V3Error("%s: not a PEM certificate" % path) from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise V3Error("%s: not an RSA certificate" % path)
    return cert


def _read_public_key(path):
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise V3Error("%s: not a PEM public key (-----BEGIN PUBLIC KEY-----)" % path) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise V3Error("%s: not an RSA public key" % path)
    return key


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise V3Error("%s: cannot read: %s" % (path, exc.strerror)) from None


def _mkdir(path):
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise V3Error("%s: cannot create the directory: %s" % (path, exc.strerror)) from None


def _write(path, data, mode):
    """Atomically (tls.write_file), unless the file already holds exactly data."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    try:
        tls.write_file(path, data, mode)
    except tls.TLSError as exc:
        raise V3Error(str(exc)) from None
