"""One bounded parser for the integers written as text in request data (query strings, XML
fields): ASCII digits only and no more of them than the upper bound has, so int() never sees
unbounded text (Python refuses more than 4300 digits with ValueError)."""


def parse_int(text, high, low=0):
    """The integer text spells in ASCII digits, from low to high; None for anything else (a
    sign, a space, another script's digits, more digits than high has, out of range)."""
    if not isinstance(text, str) or not 0 < len(text) <= len(str(high)):
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if low <= value <= high else None
