"""tinyshop: carts, prices and discounts."""
