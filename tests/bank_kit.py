"""A new user with a funded bank account, as the in-process market tests make them."""

from __future__ import annotations

from tycoon.bank.client import BankClient
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity
from tycoon.money import MICRO


async def funded_user(url: str, bank_key: str, operator: Identity, buses: list[Bus],
                      credits: int) -> tuple[Identity, Bus, BankClient]:
    """A fresh key with an open bank account holding ``credits`` (minted by ``operator``);
    its connections are appended to ``buses`` for the caller to close."""
    ident = Identity.generate()
    bus = await open_bus(url, ident)
    buses.append(bus)
    bank = BankClient(bus, bank_key, timeout=3.0)
    await bank.open()
    op_bus = await open_bus(url, operator)
    buses.append(op_bus)
    await BankClient(op_bus, bank_key).mint(ident.public_key, credits * MICRO)
    return ident, bus, bank
