"""The keys WeChat signs v3 answers and notifications with, and the guard against replayed notifications."""
import collections
import datetime
import logging
import os
import tempfile
import time

from server.wechat.v3 import wire

log = logging.getLogger("server.wechat.v3")

REPLAY_MEMORY = 2 * wire.TIMESTAMP_WINDOW + 60   # a nonce is remembered while its message could pass
REPLAY_MAX = 100000


class WeChatPayKeys:
    """The keys WeChat signs with, by the serial an answer names: the WeChat Pay public key
    (public_key_id) and the platform certificates (by their serial number, when valid)."""

    def __init__(self, public_key=None, public_key_id="", cert_dir="", clock=time.time):
        self.public_key, self.public_key_id = public_key, public_key_id
        self.cert_dir = cert_dir
        self.clock = clock
        self.certificates = {}   # serial number (int) -> x509.Certificate

    @property
    def uses_certificates(self):
        return bool(self.cert_dir)

    def key_for(self, serial):
        if self.public_key_id and serial == self.public_key_id:
            return self.public_key
        certificate = self.certificates.get(wire.serial_number(serial))
        return certificate.public_key() if certificate is not None and self.valid(certificate) else None

    def valid(self, certificate):
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc)
        return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc

    def install(self, certificates):
        """Trust exactly these (WeChat lists every certificate still in use); returns the
        serials that are new."""
        fresh = {c.serial_number: c for c in certificates if self.valid(c)}
        added = [wire.serial_hex(c) for n, c in fresh.items() if n not in self.certificates]
        self.certificates = fresh
        return added

    def load_directory(self):
        """The certificates kept in cert_dir (at start, before anything is served)."""
        if not self.cert_dir or not os.path.isdir(self.cert_dir):
            return
        for name in sorted(os.listdir(self.cert_dir)):
            if not name.lower().endswith(".pem"):
                continue
            try:
                with open(os.path.join(self.cert_dir, name), "rb") as f:
                    certificate = wire.load_certificate(f.read(64 * 1024))
            except (OSError, wire.KeyFileError) as exc:
                log.warning("platform certificate %s skipped: %s", name, exc)
                continue
            if self.valid(certificate):
                self.certificates[certificate.serial_number] = certificate

    def save(self, certificates):
        """Write each certificate to cert_dir as <SERIAL>.pem (blocking: run in a thread)."""
        from cryptography.hazmat.primitives import serialization
        os.makedirs(self.cert_dir, exist_ok=True)
        for certificate in certificates:
            path = os.path.join(self.cert_dir, wire.serial_hex(certificate) + ".pem")
            if os.path.exists(path):
                continue
            fd, temporary = tempfile.mkstemp(dir=self.cert_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(certificate.public_bytes(serialization.Encoding.PEM))
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)


class ReplayGuard:
    """The nonces of the notifications believed in the last REPLAY_MEMORY seconds: WeChat
    signs every delivery attempt afresh (a new timestamp and nonce), so the same nonce twice
    is somebody replaying a message they saw. In memory, per process (see the README)."""

    def __init__(self, clock=time.time, memory=REPLAY_MEMORY, most=REPLAY_MAX):
        self.clock, self.memory, self.most = clock, memory, most
        self._seen = collections.OrderedDict()   # nonce -> when first seen

    def seen(self, nonce):
        """True if nonce was seen within the memory; otherwise remember it and say False."""
        now = self.clock()
        while self._seen and (now - next(iter(self._seen.values())) > self.memory or len(self._seen) >= self.most):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return True
        self._seen[nonce] = now
        return False
