from tinyshop.cart import Cart


def test_total_of_single_items():
    cart = Cart()
    cart.add("apple", 120)
    cart.add("pear", 80)
    assert cart.total_cents() == 200


def test_total_counts_quantity():
    cart = Cart()
    cart.add("apple", 120, quantity=3)
    assert cart.subtotal_cents() == 360
