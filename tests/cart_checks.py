"""Checks of the basic app's Cart that every test environment must pass the same way."""

from __future__ import annotations

from typing import Any

import pytest

from processor.exceptions import UpdateRejectedError


def cart_updates_behave(env: Any) -> Any:
    """Start a Cart; updates (one running an activity), a refused update and a query behave as
    through the client. Returns the cart's handle."""
    cart = env.start_workflow("Cart", id="cart")
    assert cart.execute_update("add_item", "apple") == 1
    assert cart.execute_update("add_priced", "pear") == 42, "an update that runs an activity"
    with pytest.raises(UpdateRejectedError, match="sku must not be empty"):
        cart.execute_update("add_item", "")
    assert cart.query("contents") == ["apple", "pear@42"]
    return cart
