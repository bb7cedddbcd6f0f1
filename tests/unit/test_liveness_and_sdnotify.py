"""Heartbeat cells across a real forkserver process, and sd_notify's environment contract."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path

from corral.liveness import TICK_SECONDS, Heartbeat, next_check
from corral.sdnotify import SystemdNotifier


def _beat_in_child(heartbeat: Heartbeat) -> None:
    heartbeat.beat()


def test_a_process_heartbeat_written_in_a_forkserver_child_is_read_by_the_parent() -> None:
    ctx = multiprocessing.get_context("forkserver")
    heartbeat = Heartbeat.shared(ctx)
    created = heartbeat.last()
    before = time.monotonic()
    child = ctx.Process(target=_beat_in_child, args=(heartbeat,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    # CLOCK_MONOTONIC is system-wide: the child's stamp sits on our clock's scale.
    assert before <= heartbeat.last() <= time.monotonic()
    assert heartbeat.last() > created


def test_a_thread_heartbeat_starts_at_creation_and_moves_on_beat() -> None:
    heartbeat = Heartbeat.in_process()
    first = heartbeat.last()
    assert abs(first - time.monotonic()) < 5
    time.sleep(0.01)
    heartbeat.beat()
    assert heartbeat.last() > first


def test_the_next_check_leaves_one_tick_past_the_timeout() -> None:
    assert next_check(100.0, 30.0) == 130.0 + TICK_SECONDS


def test_no_notify_socket_means_no_notifier() -> None:
    assert SystemdNotifier.from_environ({}) is None
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "relative/path"}) is None


def test_the_watchdog_interval_is_half_the_timeout_and_only_for_us() -> None:
    base = {"NOTIFY_SOCKET": "/run/notify"}
    assert _interval(base) is None
    assert _interval({**base, "WATCHDOG_USEC": "30000000"}) == 15.0
    assert _interval({**base, "WATCHDOG_USEC": "0"}) is None
    assert _interval({**base, "WATCHDOG_USEC": "junk"}) is None
    mine = {**base, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert _interval(mine) == 1.0
    assert _interval({**mine, "WATCHDOG_PID": "1"}) is None


def _interval(environ: dict[str, str]) -> float | None:
    notifier = SystemdNotifier.from_environ(environ)
    assert notifier is not None
    notifier.close()
    return notifier.watchdog_interval


def test_a_message_is_one_datagram_of_lines(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
        assert notifier is not None
        notifier.notify("READY=1", "STATUS=2/2 workers ready")
        notifier.close()
        assert listener.recv(4096) == b"READY=1\nSTATUS=2/2 workers ready"
