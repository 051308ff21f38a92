"""simulator/v3/wire.py against every known answer of vectors_v3.json, and its parsing of
what merchants send (the Authorization header, RFC 3339 times, AES-256-GCM resources)."""
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from wechatpayv3.utils import aes_decrypt

from simulator.v3 import wire as protocol3
from tests.support import HERE

VECTORS_V3 = os.path.join(HERE, "data", "vectors_v3.json")
SPEC_VECTORS_V3 = os.path.join(HERE, "..", "..", "shared", "spec", "vectors_v3.json")


@pytest.fixture(scope="module")
def v3():
    with open(VECTORS_V3, encoding="utf-8") as f:
        return json.load(f)


def private(pem):
    return serialization.load_pem_private_key(pem.encode("ascii"), password=None)


def public(pem):
    return serialization.load_pem_public_key(pem.encode("ascii"))


def test_vectors_copy_matches_the_spec(v3):
    # The repo carries a copy so a clone without ../shared still tests; it must not drift.
    assert v3["request"] and v3["notify"] and v3["paysign"]
    if os.path.exists(SPEC_VECTORS_V3):
        with open(SPEC_VECTORS_V3, encoding="utf-8") as f:
            assert json.load(f) == v3


def test_every_request_vector(v3):
    key = private(v3["keys"]["merchant_private_key"])
    merchant_public = public(v3["keys"]["merchant_public_key"])
    for vector in v3["request"]:
        message = protocol3.request_message(vector["method"], vector["url"],
                                            vector["timestamp"], vector["nonce_str"],
                                            vector["body"])
        assert message == vector["string_to_sign"].encode("utf-8"), vector["id"]
        assert protocol3.sign(key, message) == vector["signature"], vector["id"]
        assert protocol3.verify(merchant_public, message, vector["signature"]), vector["id"]
        assert not protocol3.verify(merchant_public, message + b"x", vector["signature"])
        if "authorization" in vector:
            auth = protocol3.parse_authorization(vector["authorization"])
            assert auth == {"mchid": "1900000001", "nonce_str": vector["nonce_str"],
                            "signature": vector["signature"],
                            "timestamp": vector["timestamp"],
                            "serial_no": v3["keys"]["merchant_serial_no"]}


def test_every_notify_vector(v3):
    wechat_key = private(v3["keys"]["wechatpay_private_key"])
    wechat_public = public(v3["keys"]["wechatpay_public_key"])
    for vector in v3["notify"]:
        headers = vector["headers"]
        message = protocol3.answer_message(headers["Wechatpay-Timestamp"],
                                           headers["Wechatpay-Nonce"], vector["body"])
        assert message == vector["string_to_verify"].encode("utf-8"), vector["id"]
        assert protocol3.sign(wechat_key, message) == headers["Wechatpay-Signature"]
        assert protocol3.verify(wechat_public, message, headers["Wechatpay-Signature"])
        assert headers["Wechatpay-Signature-Type"] == protocol3.SIGNATURE_TYPE
        assert headers["Wechatpay-Serial"] == v3["keys"]["wechatpay_public_key_id"]
        resource = json.loads(vector["body"])["resource"]
        assert resource["algorithm"] == protocol3.AES_ALGORITHM
        plain = protocol3.decrypt(vector["apiv3_key"], resource["nonce"],
                                  resource["ciphertext"], resource["associated_data"])
        assert plain.decode("utf-8") == vector["plaintext"], vector["id"]
        again = protocol3.encrypt(vector["apiv3_key"], vector["plaintext"],
                                  resource["associated_data"], resource["nonce"])
        assert again["ciphertext"] == resource["ciphertext"]     # GCM is deterministic
        with pytest.raises(protocol3.DecryptError):
            protocol3.decrypt(vector["apiv3_key"], resource["nonce"], resource["ciphertext"],
                              "refund")


def test_every_paysign_vector(v3):
    key = private(v3["keys"]["merchant_private_key"])
    for vector in v3["paysign"]:
        message = protocol3.paysign_message(vector["appId"], vector["timeStamp"],
                                            vector["nonceStr"], vector["package"])
        assert message == vector["string_to_sign"].encode("utf-8"), vector["id"]
        assert protocol3.sign(key, message) == vector["paySign"], vector["id"]


def test_encryption_round_trips_with_the_sdks_decryption():
    key = "0123456789abcdef0123456789abcdef"
    resource = protocol3.encrypt(key, "证书 pem", "certificate")
    assert len(resource["nonce"]) == 12
    assert aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"],
                       key) == "证书 pem"
    assert aes_decrypt(resource["nonce"], resource["ciphertext"], "transaction", key) is None


@pytest.mark.parametrize("header, reason", [
    ("", "no Authorization"),
    ('Bearer mchid="1"', "scheme must be WECHATPAY2-SHA256-RSA2048"),
    ('WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",signature="s",timestamp="1"',
     "lacks serial_no"),
    ('WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str="n"', "key=\"value\" pairs"),
    ('WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2",nonce_str="n",signature="s",'
     'timestamp="1",serial_no="A"', "mchid appears twice"),
])
def test_malformed_authorization_is_explained(header, reason):
    with pytest.raises(protocol3.AuthorizationError) as err:
        protocol3.parse_authorization(header)
    assert reason in str(err.value)


def test_authorization_fields_in_any_order_with_spaces():
    auth = protocol3.parse_authorization(
        'WECHATPAY2-SHA256-RSA2048 serial_no="AB", timestamp="1", signature="a+b/c==",'
        ' nonce_str="n", mchid="9"')
    assert auth == {"mchid": "9", "nonce_str": "n", "signature": "a+b/c==", "timestamp": "1",
                    "serial_no": "AB"}


def test_times_and_signatures_edge_cases():
    assert protocol3.rfc3339(0) == "1970-01-01T08:00:00+08:00"
    assert protocol3.parse_rfc3339("1970-01-01T08:00:00+08:00") == 0
    assert protocol3.parse_rfc3339("1970-01-01T00:00:00Z") == 0
    for bad in ("1970-01-01 08:00:00", "1970-01-01T08:00:00", "20261202103456", None):
        with pytest.raises(ValueError):
            protocol3.parse_rfc3339(bad)
    assert protocol3.decode_signature("not base64!") is None
    assert protocol3.decode_signature("") is None
    assert protocol3.same_serial("abc", "ABC") and not protocol3.same_serial("abc", "abd")
