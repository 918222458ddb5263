"""One TLS context per process for every httpx client ftpipe makes.

httpx builds a new verifying context for each client, reading and parsing the whole CA bundle (0.05-0.2 s,
more on a loaded machine), even for the plain-HTTP loopback URLs of the embedded backend; a run makes
several clients (preflight, connection lease, the flow's client, health checks). One shared context keeps
httpx's defaults: certifi's CAs, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, hostnames checked.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, built on first use (``ssl.SSLContext`` is safe to share)."""
    return httpx.create_ssl_context()
