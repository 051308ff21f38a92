"""server/wxpay3.py: every vector of vectors_v3.json, and each way a signed message is refused."""
import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.wechat.v3 import wire as wxpay3
from server.wechat.v3.keys import ReplayGuard
from simulator.v3 import notifications as notifications3, wire as protocol3
from tests.support.server3 import APIV3_KEY, PUB_KEY_ID, VECTORS_V3, other_key, prepare_keys, sign_again, sim3_dir  # noqa: F401

KEYS = VECTORS_V3["keys"]
MERCHANT_KEY = wxpay3.load_private_key(KEYS["merchant_private_key"])
MERCHANT_PUBLIC = wxpay3.load_public_key(KEYS["merchant_public_key"])
WECHATPAY_PUBLIC = wxpay3.load_public_key(KEYS["wechatpay_public_key"])
NOTIFY = VECTORS_V3["notify"][0]
NOW = int(NOTIFY["headers"]["Wechatpay-Timestamp"])


def encrypt(plaintext, associated_data):
    return protocol3.encrypt(APIV3_KEY, plaintext, associated_data)


def signed_headers(body, key, timestamp):
    """The simulator's signature headers for body, signed by key at timestamp."""
    headers, _ = notifications3.signed_headers(body, PUB_KEY_ID, key)
    return sign_again(headers, body, key, timestamp)


def key_for(serial):
    return WECHATPAY_PUBLIC if serial == PUB_KEY_ID else None


@pytest.mark.parametrize("vector", VECTORS_V3["request"], ids=lambda v: v["id"])
def test_request_signature_vectors(vector):
    message = wxpay3.request_message(vector["method"], vector["url"], vector["timestamp"], vector["nonce_str"],
                                     vector["body"])
    assert message == vector["string_to_sign"].encode("utf-8")
    assert wxpay3.sign(MERCHANT_KEY, message) == vector["signature"]
    assert wxpay3.verify(MERCHANT_PUBLIC, message, vector["signature"])
    if "authorization" in vector:
        mchid = json.loads(vector["body"])["mchid"]
        assert wxpay3.authorization(mchid, KEYS["merchant_serial_no"], MERCHANT_KEY, vector["method"], vector["url"],
                                    vector["body"], vector["timestamp"], vector["nonce_str"]) == vector["authorization"]


@pytest.mark.parametrize("vector", VECTORS_V3["paysign"], ids=lambda v: v["id"])
def test_pay_sign_vectors(vector):
    message = wxpay3.pay_message(vector["appId"], vector["timeStamp"], vector["nonceStr"], vector["package"])
    assert message == vector["string_to_sign"].encode("utf-8")
    params = wxpay3.pay_sign_params(vector["appId"], vector["package"].split("=", 1)[1], MERCHANT_KEY,
                                    vector["timeStamp"], vector["nonceStr"])
    assert params == {"timeStamp": vector["timeStamp"], "nonceStr": vector["nonceStr"],
                      "package": vector["package"], "signType": "RSA", "paySign": vector["paySign"]}


@pytest.mark.parametrize("vector", VECTORS_V3["notify"], ids=lambda v: v["id"])
def test_notify_vectors(vector):
    body = vector["body"].encode("utf-8")
    headers = wxpay3.signed_headers(vector["headers"].items())
    assert wxpay3.answer_message(headers["wechatpay-timestamp"], headers["wechatpay-nonce"], body) == \
        vector["string_to_verify"].encode("utf-8")
    assert wxpay3.check_signed(headers, body, key_for, NOW) == vector["headers"]["Wechatpay-Serial"]
    resource = json.loads(vector["body"])["resource"]
    assert wxpay3.decrypt_resource(resource, vector["apiv3_key"]) == json.loads(vector["plaintext"])


def refusal(headers, body=NOTIFY["body"].encode("utf-8"), now=NOW, keys=key_for):
    with pytest.raises(wxpay3.SignatureError) as info:
        wxpay3.check_signed(wxpay3.signed_headers(headers.items()), body, keys, now)
    return info.value.reason


def test_every_refusal_has_its_reason():
    good = dict(NOTIFY["headers"])
    assert refusal(dict(good, **{"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + good["Wechatpay-Signature"]})) == "probe"
    assert refusal(dict(good, **{"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"})) == "signature_type"
    untyped = {k: v for k, v in good.items() if k != "Wechatpay-Signature-Type"}
    assert refusal(untyped) == "missing"                # a notification names its type
    # an API answer may leave it out (WeChat's documented example answer does): RSA, still verified
    assert wxpay3.check_signed(wxpay3.signed_headers(untyped.items()), NOTIFY["body"].encode(), key_for, NOW,
                               type_required=False) == good["Wechatpay-Serial"]
    with pytest.raises(wxpay3.SignatureError) as info:
        wxpay3.check_signed(wxpay3.signed_headers(dict(good, **{"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"})
                                                  .items()), NOTIFY["body"].encode(), key_for, NOW, type_required=False)
    assert info.value.reason == "signature_type"
    assert refusal(good, now=NOW + 301) == "stale"
    assert refusal(good, now=NOW - 301) == "stale"
    assert refusal(dict(good, **{"Wechatpay-Timestamp": "17646500 97"})) == "timestamp"
    assert refusal(dict(good, **{"Wechatpay-Serial": "PUB_KEY_ID_0119000000012026120200000000000002"})) == "unknown_serial"
    assert refusal(good, body=NOTIFY["body"].replace("EV-2018", "EV-2019").encode()) == "bad_signature"
    assert refusal(dict(good, **{"Wechatpay-Nonce": "b" + good["Wechatpay-Nonce"][1:]})) == "bad_signature"
    assert refusal(dict(good, **{"Wechatpay-Signature": "not base64!"})) == "bad_signature"
    other = signed_headers(NOTIFY["body"].encode(), key=other_key(), timestamp=NOW)
    assert refusal(other) == "bad_signature"
    # the window is inclusive: 300 s either way still passes
    wxpay3.check_signed(wxpay3.signed_headers(good.items()), NOTIFY["body"].encode(), key_for, NOW + 300)
    with pytest.raises(wxpay3.SignatureError) as info:
        wxpay3.signed_headers(list(good.items()) + [("wechatpay-signature", good["Wechatpay-Signature"])])
    assert info.value.reason == "duplicate"


def test_decryption_refuses_a_wrong_key_and_tampering():
    resource = json.loads(NOTIFY["body"])["resource"]
    with pytest.raises(wxpay3.DecryptError):
        wxpay3.decrypt_resource(resource, "b" * 32)
    sealed = base64.b64decode(resource["ciphertext"])
    tampered = dict(resource, ciphertext=base64.b64encode(sealed[:-1] + bytes([sealed[-1] ^ 1])).decode())
    for bad in (tampered, dict(resource, associated_data="refund"), dict(resource, algorithm="AES_256_CBC"),
                dict(resource, ciphertext="%%%"), dict(resource, nonce=None), "resource"):
        with pytest.raises(wxpay3.DecryptError):
            wxpay3.decrypt_resource(bad, NOTIFY["apiv3_key"])
    with pytest.raises(wxpay3.DecryptError):
        wxpay3.decrypt_resource(encrypt("[1, 2]", "transaction"), APIV3_KEY)   # not an object


def test_certificates_answer_decrypted_and_checked(sim3_dir):
    certificate = prepare_keys(sim3_dir, "certificate").platform_cert
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    entry = {"serial_no": protocol3.serial_hex(certificate), "encrypt_certificate": encrypt(pem, "certificate")}
    [loaded] = wxpay3.decrypt_certificates({"data": [entry]}, APIV3_KEY)
    assert loaded.serial_number == certificate.serial_number and wxpay3.serial_hex(loaded) == protocol3.serial_hex(certificate)
    with pytest.raises(wxpay3.DecryptError):
        wxpay3.decrypt_certificates({"data": [dict(entry, serial_no="0123ABCD")]}, APIV3_KEY)
    with pytest.raises(wxpay3.DecryptError):
        wxpay3.decrypt_certificates({"data": [entry]}, "c" * 32)
    with pytest.raises(wxpay3.DecryptError):
        wxpay3.decrypt_certificates({"data": []}, APIV3_KEY)


def test_key_loading_names_the_problem():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    locked = other_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret"))
    for pem, says in ((ec_pem, "is not an RSA private key"), (locked, "is encrypted"),
                      (b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "is not a PEM private key"),
                      (KEYS["merchant_public_key"], "is not a PEM private key")):
        with pytest.raises(wxpay3.KeyFileError) as info:
            wxpay3.load_private_key(pem)
        assert says in str(info.value)
    with pytest.raises(wxpay3.KeyFileError) as info:
        wxpay3.load_public_key(ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "not an RSA public key" in str(info.value)


def test_replay_guard_remembers_within_its_memory():
    now = [1000.0]
    guard = ReplayGuard(clock=lambda: now[0], memory=660, most=3)
    assert not guard.seen("n1") and guard.seen("n1")
    now[0] += 661
    assert not guard.seen("n1")                       # forgotten: its timestamp can no longer pass
    for n in ("a", "b", "c", "d"):
        assert not guard.seen(n)
    assert not guard.seen("a")                        # bounded: the oldest went first
