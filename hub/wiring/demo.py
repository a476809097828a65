"""Demo data: a few products, an admin and a customer, so the web app at `/` has something
to show (`python run.py --demo` or HUB_DEMO=1; refused in production by config/settings.py).

Seeding goes through the domain (Accounts, Catalog) like any other caller, and is
idempotent: a product whose slug exists and an account whose email exists are left alone,
so restarting against a persistent MongoDB adds nothing twice.
"""

from __future__ import annotations

import logging

from config.settings import SettingsError
from domain.errors import Conflict
from domain.money import to_minor
from domain.products import slugify

log = logging.getLogger(__name__)

# Used when HUB_ADMIN_EMAIL / HUB_ADMIN_PASSWORD are not set. Development only: the demo is
# refused in production, and the hub listens on 127.0.0.1 unless told otherwise.
DEMO_ADMIN = ("admin@demo.example.com", "demo-admin-password")
DEMO_CUSTOMER = ("shopper@demo.example.com", "demo-shopper-password")

# name, price, stock, category, description, low-stock threshold
PRODUCTS = [
    ("Stoneware mug", "14.00", 42, "kitchen", "A heavy 350 ml mug, glazed in slate blue.", 10),
    ("Pour-over coffee dripper", "24.50", 6, "kitchen", "Ceramic cone for one or two cups.", 8),
    ("Linen tea towel", "9.90", 120, "kitchen", "Stonewashed linen, 50 x 70 cm.", 10),
    ("Canvas tote bag", "19.00", 3, "bags", "Heavy canvas with a leather strap.", 5),
    ("Waxed rain jacket", "129.00", 0, "clothing", "Waxed cotton, fully lined. Back soon.", 3),
    ("Merino beanie", "32.00", 25, "clothing", "Soft merino wool, one size.", 5),
    ("Notebook, dotted A5", "12.00", 80, "stationery", "192 pages of 100 g paper, lay-flat binding.", 10),
    ("Brass pen", "45.00", 9, "stationery", "Solid brass, takes standard refills.", 10),
]


async def seed(settings, stores, services) -> dict:
    """Creates what is missing; returns the accounts to announce: {"admin": (email, password),
    "customer": (email, password)} (the admin's password is None when HUB_ADMIN_* chose it)."""
    if settings.admin_email and settings.admin_password:
        admin = (settings.admin_email, None)  # ensured at start-up already; never echo an operator's password
    else:
        admin = DEMO_ADMIN
        try:
            await services.accounts.ensure_admin(*DEMO_ADMIN)
        except Conflict as exc:
            raise SettingsError(f"HUB_DEMO: {exc.message}") from None
    if await stores.users.by_email(DEMO_CUSTOMER[0]) is None:
        try:
            await services.accounts.register(email=DEMO_CUSTOMER[0], password=DEMO_CUSTOMER[1], name="Demo Shopper")
        except Conflict:  # another process created it first
            pass
    created = 0
    for name, price, stock, category, description, threshold in PRODUCTS:
        if await stores.products.get_by_slug(slugify(name)) is not None:
            continue
        await services.catalog.create(name=name, price_minor=to_minor(price), stock=stock, category=category,
                                 description=description, low_stock_threshold=threshold)
        created += 1
    log.info("demo data ready", extra={"products_created": created})
    return {"admin": admin, "customer": DEMO_CUSTOMER}


def banner(accounts: dict, base_url: str) -> str:
    """What development prints at start-up so a person can sign in."""
    admin_email, admin_password = accounts["admin"]
    admin = f"{admin_email} / {admin_password}" if admin_password else f"{admin_email} (password from HUB_ADMIN_PASSWORD)"
    customer_email, customer_password = accounts["customer"]
    return "\n".join([
        f"hub: demo shop at {base_url}/",
        f"hub:   admin:    {admin}",
        f"hub:   customer: {customer_email} / {customer_password}",
    ])

