"""Process entry point: settings, logging, then serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from config.settings import SettingsError, load_settings
from hub.logs import setup_logging
from hub.server import serve


def main() -> int:
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except Exception:
        logging.getLogger("hub").exception("start-up failed")
        return 1
    return 0
