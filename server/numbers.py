"""Whole numbers from requests, answers and settings: ASCII digits only, and never many."""

MAX_DIGITS = 18                  # every number of 18 digits fits a signed 64-bit integer
MAX_WHOLE = 10 ** MAX_DIGITS - 1


class NumberRefused(ValueError):
    """Not a whole number from the minimum to the maximum; `too_large` when it is one, only
    too large (more digits than MAX_DIGITS, or over the maximum)."""

    def __init__(self, message, too_large=False):
        super().__init__(message)
        self.too_large = too_large


def parse_whole(text, minimum=0, maximum=MAX_WHOLE):
    """The int that `text` writes in ASCII digits, from minimum to maximum; NumberRefused
    otherwise. int() alone is no guard: it takes " 12", "+1", "1_2" and "١٢", and text of
    over 4300 digits makes it raise ValueError (after quadratic work), a 500 wherever the
    text came from a request. Here no more than MAX_DIGITS digits ever reach it."""
    if not (isinstance(text, str) and text.isascii() and text.isdigit()):
        raise NumberRefused("not a whole number in ASCII digits")
    if len(text) > MAX_DIGITS:
        raise NumberRefused("more than %d digits" % MAX_DIGITS, too_large=True)
    return check_whole(int(text), minimum, maximum)


def check_whole(value, minimum=0, maximum=MAX_WHOLE):
    """`value` if it is an int (a JSON integer; a bool is not one) from minimum to maximum;
    NumberRefused otherwise."""
    if type(value) is not int:
        raise NumberRefused("not a whole number")
    if value > maximum:
        raise NumberRefused("over %d" % maximum, too_large=True)
    if value < minimum:
        raise NumberRefused("under %d" % minimum)
    return value
