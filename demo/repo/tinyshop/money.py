"""Money helpers. Amounts are integer cents."""


def format_price(cents: int) -> str:
    """Format cents as a price in euros, e.g. 1234 -> '12.34 EUR'."""
    if not isinstance(cents, int):
        raise ValueError(f"cents must be an integer, got {cents!r}")
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d} EUR"
