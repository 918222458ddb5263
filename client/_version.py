"""Package version and the User-Agent every request carries."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _package_version() -> str:
    try:
        return version("ftpipe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


__version__ = _package_version()
USER_AGENT = f"ftpipe/{__version__}"
