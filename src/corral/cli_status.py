"""``corral status``: the side port's worker table, as a health command or a live view.

Its own module because its options (one per side-port auth mode, each with a
``CORRAL_STATUS_*`` variable for a container's health check) are as long as
the rest of the CLI; ``cli`` registers it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from corral import status_client, status_watch


def _secret_option(flag: str, envvar: str, help_text: str) -> Callable[[Any], Any]:
    """A path or name option that may also come from ``envvar`` (what a container sets)."""
    return click.option(
        flag, default=None, envvar=envvar, metavar="PATH", help=f"{help_text}  [${envvar}]"
    )


@click.command()
@click.option(
    "--url",
    default=None,
    envvar="CORRAL_STATUS_URL",
    help=f"Side port to ask.  [default: $CORRAL_STATUS_URL or {status_client.DEFAULT_URL}]",
)
@click.option(
    "--token",
    default=None,
    envvar="CORRAL_METRICS_TOKEN",
    help="Bearer token for the side port (shows in ps: prefer --token-file).  "
    "[$CORRAL_METRICS_TOKEN]",
)
@_secret_option(
    "--token-file", "CORRAL_STATUS_TOKEN_FILE", "File holding the bearer token (one line)."
)
@click.option(
    "--user",
    default=None,
    envvar="CORRAL_STATUS_USER",
    help="Basic-auth user; the password comes from --password-file or --password-env.  "
    "[$CORRAL_STATUS_USER]",
)
@_secret_option(
    "--password-file", "CORRAL_STATUS_PASSWORD_FILE", "File holding --user's password (one line)."
)
@click.option(
    "--password-env",
    default=None,
    envvar="CORRAL_STATUS_PASSWORD_ENV",
    metavar="VAR",
    help="Environment variable holding --user's password.  [$CORRAL_STATUS_PASSWORD_ENV]",
)
@_secret_option("--cert", "CORRAL_STATUS_CERT", "Client certificate (PEM) for mutual TLS.")
@_secret_option("--key", "CORRAL_STATUS_KEY", "Its unencrypted key (PEM), if not in --cert.")
@_secret_option(
    "--cacert", "CORRAL_STATUS_CACERT", "CA bundle that signed an https side port's certificate."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw /workers JSON.")
@click.option("--watch", is_flag=True, help="Redraw the table every --interval until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Stop --watch after this many refreshes.  [default: until Ctrl-C]",
)
def status(
    url: str | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
    **secrets: str | None,
) -> None:
    """Show the worker table; exit 0 when corral is ready, 1 when not (a health command).

    A refused credential exits 11; a certificate, key or secret file that
    cannot be used exits 3.
    """
    if count is not None and not watch:
        raise click.UsageError("--count needs --watch")
    target = url or status_client.DEFAULT_URL
    try:
        credentials = status_client.credentials_from_options(**secrets)
        if watch:
            sys.exit(
                status_watch.watch(
                    target, credentials, interval=interval, count=count, as_json=as_json
                )
            )
        report = status_client.fetch(target, credentials)
    except status_client.StatusError as exc:
        click.echo(f"corral: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except status_client.CredentialsUsageError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(status_client.to_json(report))
    else:
        for line in status_client.render(report):
            click.echo(line)
    sys.exit(0 if report.ready else status_client.NOT_READY)
