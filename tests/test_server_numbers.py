"""server/numbers.py: the one reader of whole numbers from requests, answers and settings."""
import pytest

from server.numbers import MAX_DIGITS, NumberRefused, check_whole, parse_whole


@pytest.mark.parametrize("text, expected", [("0", 0), ("7", 7), ("007", 7), ("9" * MAX_DIGITS, 10 ** MAX_DIGITS - 1)])
def test_ascii_digits_are_read(text, expected):
    assert parse_whole(text) == expected


@pytest.mark.parametrize("text", ["", " 12", "12 ", "+1", "-1", "1_2", "1.0", "0x1f", "١٢", "²", "１２", None, 12, b"12"])
def test_anything_but_ascii_digits_is_refused(text):
    """int() takes several of these (" 12", "+1", "1_2", "١٢", "１２")."""
    with pytest.raises(NumberRefused) as info:
        parse_whole(text)
    assert not info.value.too_large


@pytest.mark.parametrize("text", ["9" * (MAX_DIGITS + 1), "0" * (MAX_DIGITS + 1), "9" * 5001, "9" * 100000])
def test_more_digits_than_the_cap_are_too_large_before_int_sees_them(text):
    """int() of over 4300 digits raises ValueError; below that it is quadratic."""
    with pytest.raises(NumberRefused) as info:
        parse_whole(text)
    assert info.value.too_large


def test_the_range_is_checked():
    assert parse_whole("200", 1, 200) == 200
    with pytest.raises(NumberRefused) as info:
        parse_whole("201", 1, 200)
    assert info.value.too_large
    with pytest.raises(NumberRefused) as info:
        parse_whole("0", 1, 200)
    assert not info.value.too_large


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1], 2 ** 31, 2 ** 63, 10 ** 4000, 0, -1])
def test_json_numbers_must_be_ints_in_range(value):
    with pytest.raises(NumberRefused):
        check_whole(value, 1, 2 ** 31 - 1)


def test_json_int_in_range_passes():
    assert check_whole(2 ** 31 - 1, 1, 2 ** 31 - 1) == 2 ** 31 - 1
