"""How the commands that talk to the API (``jobs``, ``chat``) reach it: the connection ``ftpipe run`` uses.

Remote when ``--base-url`` or ``MKA1_*`` is set, else the embedded backend at its configured local URL
(started when it is not running); see ``flows.backend_runtime.open_connection``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client import MKA1Client


# Shown in the examples of every command that takes the API options, so each option has an example.
API_EXAMPLE = (
    "--base-url https://apigw.mka1.com/api/v1/llm --on-behalf-of user-42   (a remote API, for one end user)"
)


def add_api_options(p: argparse.ArgumentParser) -> None:
    """``--base-url`` and ``--on-behalf-of`` in an "API" group, declared once in ``cli.options``."""
    from cli.options import add_api

    add_api(p.add_argument_group("API"))


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[MKA1Client]:
    """A client on the API the parsed options point at (closed, and a backend started here stopped, on exit).

    A connection failure names the URL the client used (the error boundary only knows MKA1_BASE_URL).
    """
    from cli.errors import CommandError
    from client import MKA1Client
    from client.errors import APIConnectionError
    from flows.backend_runtime import open_connection

    with open_connection(args.base_url, args.on_behalf_of) as conn:
        url = conn.settings.base_url
        try:
            with MKA1Client(conn.settings, transport=conn.transport) as client:
                yield client
        except APIConnectionError as exc:
            if conn.embedded:
                raise CommandError(f"the embedded backend at {url} stopped answering: {exc}") from exc
            raise CommandError(
                f"cannot reach the API at {url}: {exc}; check MKA1_BASE_URL (or --base-url) and the network"
            ) from exc
