"""The simulator's own plane, not WeChat's: the phone, the /sim/ control endpoints, the console."""
