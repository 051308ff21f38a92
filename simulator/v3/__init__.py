"""WeChat Pay API v3 as the simulator plays it: JSON wire, keys, rules, endpoints, notifications."""
