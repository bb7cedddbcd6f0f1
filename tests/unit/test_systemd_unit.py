"""The shipped systemd unit agrees with what corral does and accepts."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from corral.cli import run
from corral.config import ServerConfig

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "corral.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    text = UNIT.read_text().replace("\\\n", " ")  # systemd's line continuations
    parser.read_string(text)
    return parser["Service"]


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def _exec_start_config() -> ServerConfig:
    argv = shlex.split(_service()["ExecStart"])
    assert argv[0].endswith("/corral")
    assert argv[1] == "run"
    context = run.make_context("run", argv[2:])  # click rejects any flag corral lacks
    values = {k: v for k, v in context.params.items() if v is not None}
    fields = set(ServerConfig.__dataclass_fields__)
    return ServerConfig(**{k: v for k, v in values.items() if k in fields})


def test_the_unit_is_type_notify_with_a_watchdog_and_a_mixed_kill() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert _seconds(service["WatchdogSec"]) > 0
    assert service["KillMode"] == "mixed"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_systemd_waits_longer_than_the_drain_and_the_force_stop() -> None:
    config = _exec_start_config()
    assert config.workers == 4
    assert config.worker_timeout > 0
    drain = config.shutdown_timeout + config.force_stop_grace
    assert _seconds(_service()["TimeoutStopSec"]) > drain


def test_restarts_skip_the_exit_codes_a_restart_cannot_fix() -> None:
    prevented = {int(code) for code in _service()["RestartPreventExitStatus"].split()}
    assert prevented == {2, 3, 4}  # usage, config, app import: see errors.ExitCode
