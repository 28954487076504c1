"""structlog set-up: JSON lines on stderr, with every known secret masked in every event."""

from __future__ import annotations

import logging
import sys
import threading

import structlog

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask ``value`` in every later log event (values shorter than 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def _mask(value):
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    return value


def mask_secrets(_logger, _name, event_dict: dict) -> dict:
    if not _secrets:
        return event_dict
    return {key: _mask(value) for key, value in event_dict.items()}


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog (and the stdlib root logger that grpc uses) for the agent process."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
