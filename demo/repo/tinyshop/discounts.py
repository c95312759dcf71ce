"""Discount codes. Each code maps to a percentage off the order total."""

CODES = {
    "WELCOME10": 10,
    "SPRING20": 20,
}


def apply_discount(total_cents: int, code: str | None) -> int:
    """Return the total after applying a discount code (rounded down to whole cents)."""
    if code is None:
        return total_cents
    percent = CODES.get(code.upper())
    if percent is None:
        raise ValueError(f"unknown discount code {code!r}")
    return total_cents - total_cents * percent // 100
