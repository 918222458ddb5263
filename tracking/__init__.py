"""Experiment tracking over MLflow: settings (``tracking.settings``), the background ``Tracker``
(``tracking.tracker``) and run queries for ``ftpipe runs`` (``tracking.runs``). MLflow is imported lazily."""
