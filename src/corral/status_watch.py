"""``corral status --watch``: the worker table, refreshed until Ctrl-C.

On a terminal each refresh clears the screen and redraws the table in place.
Piped, nothing is cleared: each refresh is appended (a blank line between
tables, or one JSON object per line with ``--json``), so a log or a test reads
every one. An unreachable side port is one line on stderr and the loop goes
on, because a corral that is restarting or being redeployed is briefly away.
A refused credential or a bad TLS setting does not fix itself, so it ends the
loop with its own exit code. Ctrl-C is how a watch is meant to end: exit 0.
"""

from __future__ import annotations

import sys
import time

import click

from corral.status_client import (
    NOT_READY,
    Credentials,
    StatusError,
    StatusReport,
    fetch,
    render,
    to_json,
)


def watch(
    url: str, credentials: Credentials, *, interval: float, count: int | None, as_json: bool
) -> int:
    """Refresh every ``interval`` seconds, ``count`` times (``None``: until Ctrl-C).

    Returns the exit code: 0 after Ctrl-C, else the last refresh's (0 when it
    found corral ready). Raises ``StatusError`` for a setting to fix.
    """
    terminal = sys.stdout.isatty()
    exit_code = NOT_READY
    done = 0
    try:
        while count is None or done < count:
            started = time.monotonic()
            exit_code = _refresh(url, credentials, interval, as_json, terminal, first=not done)
            done += 1
            if count is None or done < count:
                # A slow fetch (up to its timeout) shortens the wait; it never
                # makes the next refreshes come in a burst.
                time.sleep(max(0.0, started + interval - time.monotonic()))
    except KeyboardInterrupt:
        if terminal:
            click.echo()
        return 0
    return exit_code


def _refresh(
    url: str,
    credentials: Credentials,
    interval: float,
    as_json: bool,
    terminal: bool,
    *,
    first: bool,
) -> int:
    try:
        report = fetch(url, credentials)
    except StatusError as exc:
        if exc.exit_code != NOT_READY:
            raise
        click.echo(f"corral: warning: {exc}; retrying every {interval:g}s", err=True)
        return NOT_READY
    click.echo("\n".join(_screen(report, interval, as_json, terminal, first=first)))
    return 0 if report.ready else NOT_READY


def _screen(
    report: StatusReport, interval: float, as_json: bool, terminal: bool, *, first: bool
) -> list[str]:
    if as_json:
        return [to_json(report)]
    lines = render(report)
    if terminal:
        click.clear()
        stamp = time.strftime("%H:%M:%S")
        lines += ["", click.style(f"{stamp}, every {interval:g}s; Ctrl-C to stop", dim=True)]
    elif not first:
        lines.insert(0, "")
    return lines
