"""A user's script that embeds corral the README's way, *without* a ``__main__`` guard.

Run as ``python embedded_unguarded.py`` or ``python -m
tests.integration.embedded_unguarded``. multiprocessing would re-run such a
script in every worker it starts, which would start corral again in there;
``test_worker_imports`` proves corral's workers never do. It logs JSON like
``corral run`` does, including the ``corral listening`` line the fixtures wait for.
"""

from __future__ import annotations

import structlog

from corral.appload import load_app
from corral.config import ServerConfig
from corral.config_choices import LogFormat
from corral.lifecycle import LifecycleCollector
from corral.lifecycle.log_sink import StructlogSink
from corral.listeners import create_listeners, describe
from corral.logs import configure_logging
from corral.runtime import WorkerMode
from corral.supervisor import Supervisor

APP = "tests.integration.modules_app:app"

config = ServerConfig(port=0, workers=1, mode=WorkerMode.PROCESS, log_format=LogFormat.JSON)
configure_logging(config.log_format, config.log_level)
sockets = create_listeners(config)
supervisor = Supervisor(
    config,
    load_app(APP),
    app_path=APP,
    lifecycle_collector=LifecycleCollector([StructlogSink()]),
)
structlog.get_logger("corral").info("corral listening", urls=[describe(sockets[0])])
raise SystemExit(int(supervisor.run(sockets)))
