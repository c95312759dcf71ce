import pytest
from tinyshop.money import format_price


def test_formats_cents():
    assert format_price(1234) == "12.34 EUR"
    assert format_price(5) == "0.05 EUR"


def test_rejects_floats():
    with pytest.raises(ValueError):
        format_price(12.5)
