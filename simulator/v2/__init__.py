"""WeChat Pay API v2 as the simulator plays it: the XML wire, the rules, the endpoints, the v2notifications."""
