"""WeChat Pay API v3: the client (client.py), its JSON/RSA wire format (wire.py), the keys WeChat signs with (keys.py)."""
