"""The simulator's own plane (not WeChat's API): the phone, the /sim/ control endpoints, the console."""
