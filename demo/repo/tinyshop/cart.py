"""A shopping cart."""

from dataclasses import dataclass, field

from tinyshop.discounts import apply_discount


@dataclass
class Line:
    sku: str
    unit_cents: int
    quantity: int = 1


@dataclass
class Cart:
    lines: list[Line] = field(default_factory=list)
    discount_code: str | None = None

    def add(self, sku: str, unit_cents: int, quantity: int = 1) -> None:
        """Add a line to the cart."""
        if quantity < 1:
            raise ValueError(f"quantity must be at least 1, got {quantity!r}")
        self.lines.append(Line(sku, unit_cents, quantity))

    def subtotal_cents(self) -> int:
        """Sum of the lines before discounts."""
        return sum(line.unit_cents for line in self.lines)

    def total_cents(self) -> int:
        """What the customer pays."""
        return apply_discount(self.subtotal_cents(), self.discount_code)
