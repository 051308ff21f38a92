"""WeChat Pay API v3 as the simulator plays it: the JSON wire and keys, the rules, the endpoints, the v2notifications."""
