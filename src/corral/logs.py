"""structlog set-up shared by the supervisor and every worker process.

Everything, including uvicorn's own stdlib loggers, goes through one
``ProcessorFormatter`` to stderr, so an operator gets one stream of either
JSON lines (for log shippers) or coloured console lines (for people). The
default, ``auto``, picks console lines when stderr is a terminal and JSON
otherwise, as structlog recommends.
orjson renders faster where it is installed; it is optional because it has
no free-threaded wheels.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from corral.config import LogFormat

_ACCESS_ARGS = ("client", "method", "path", "http_version", "status")


def _json_serializer() -> Callable[..., str]:
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return json.dumps

    def dumps(obj: Any, **kwargs: Any) -> str:
        return str(orjson.dumps(obj, default=kwargs.get("default")).decode())

    return dumps


def _uvicorn_access_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Turn uvicorn's positional access-log arguments into named fields."""
    args = event_dict.pop("positional_args", ())
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and len(args) == 5:
        event_dict.update(zip(_ACCESS_ARGS, args, strict=True))
        event_dict["event"] = "access"
    return event_dict


_MACHINE_FIELDS = ("lifecycle", "wall_time", "monotonic", "seq", "trace_id", "span_id")


def _drop_machine_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console lines are for people: leave out the fields only machines need."""
    for key in _MACHINE_FIELDS:
        event_dict.pop(key, None)
    return event_dict


def resolve_format(log_format: LogFormat) -> LogFormat:
    """``auto`` becomes console on a terminal and JSON anywhere else (a pipe, a file,
    a container's log driver). Process workers share the supervisor's stderr, so
    they resolve it the same way."""
    if log_format is not LogFormat.AUTO:
        return log_format
    on_terminal = sys.stderr is not None and sys.stderr.isatty()
    return LogFormat.CONSOLE if on_terminal else LogFormat.JSON


def configure_logging(log_format: LogFormat, level: str, *, access_log: bool = False) -> None:
    """(Re)configure structlog and the stdlib root logger; safe to call more than once."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderers: list[Processor]
    if resolve_format(log_format) is LogFormat.JSON:
        renderers = [structlog.processors.JSONRenderer(serializer=_json_serializer())]
    else:
        renderers = [
            _drop_machine_fields,
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _uvicorn_access_fields],
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *renderers,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # uvicorn's own start/stop chatter repeats what lifecycle events already say.
    quiet = max(root.level, logging.WARNING) if root.level > logging.DEBUG else root.level
    logging.getLogger("uvicorn.error").setLevel(quiet)
    logging.getLogger("uvicorn.access").disabled = not access_log
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
