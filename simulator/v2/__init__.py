"""WeChat Pay API v2 as the simulator plays it: XML wire, rules, endpoints, notifications."""
