"""ftpipe's local background services: a long-lived Prefect server and the shared embedded backend.

``registry`` keeps their state (records and client leases) under ``<state dir>/services``; ``manager``
starts, reuses and stops them; ``host`` is the process each one runs in (with the watchdog that idles it
out); ``prefect_api`` and ``embedded`` are what ``ftpipe run`` and ``open_connection`` call. The
``ftpipe services`` command (``cli/services.py``) only presents them.
"""
