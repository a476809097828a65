"""Process entry point: settings, logging, then serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from config.settings import SettingsError, load_settings
from hub.wiring.logs import setup_logging
from hub.wiring.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description="Start the hub (settings: see README).")
    parser.add_argument("--demo", action="store_true",
                        help="seed demo products, an admin and a customer (same as HUB_DEMO=1; not in production)")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.demo:
        environ["HUB_DEMO"] = "1"
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:  # found at start-up, e.g. HUB_ADMIN_EMAIL taken by a non-admin
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("hub").exception("start-up failed")
        return 1
    return 0
