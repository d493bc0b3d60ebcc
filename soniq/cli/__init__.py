"""The ``soniq`` command: a thin click layer over the app's public methods (no SQL here).

Every command takes ``--database-url`` and ``--schema`` (else ``SONIQ_DATABASE_URL`` /
``SONIQ_SCHEMA``); read commands take ``--json``. Exit codes: 0 ok, 1 failure, 2 usage.
Errors are one line on stderr; ``--debug`` shows the traceback instead.

The group lives in :mod:`soniq.cli.base`; each command module registers its commands on it
when imported here.
"""

from soniq.cli import (  # noqa: F401  (imported to register their commands)
    dashboard,
    dead_letter,
    embedded,
    enqueue,
    inspection,
    jobs,
    processes,
    queues,
    schema,
    status,
    tasks,
    webhooks,
    workflows,
)
from soniq.cli.base import cli, main

__all__ = ["cli", "main"]
