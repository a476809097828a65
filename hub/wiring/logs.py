"""Structured JSON logs on stderr, one object per line."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka is chatty about routine group rebalances at INFO.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
