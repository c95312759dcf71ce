import pytest
from tinyshop.discounts import apply_discount


def test_applies_percentage():
    assert apply_discount(1000, "WELCOME10") == 900


def test_codes_are_case_insensitive():
    assert apply_discount(1000, "spring20") == 800


def test_unknown_code():
    with pytest.raises(ValueError):
        apply_discount(1000, "NOPE")
