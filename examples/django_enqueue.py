"""Enqueue from Django in the same ``transaction.atomic()`` as your rows.

    python examples/django_enqueue.py

``soniq.contrib.django.enqueue`` writes the job on Django's own database connection
(PostgreSQL, psycopg 3), so it commits or rolls back with the transaction. No
``INSTALLED_APPS`` entry, no ``on_commit``. Here Django is configured in the script; in a
project, settings.py does that and ``soniq worker`` runs the jobs.
"""

from __future__ import annotations

import os
import sys

try:
    import django
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:
    print(f"SKIP {exc.name} is not installed: pip install 'soniq[django]'")
    sys.exit(0)

from django.conf import settings

from soniq import Soniq

app = Soniq()


@app.job(name="shop.ship_order")
async def ship_order(order_id: int) -> str:
    return f"order {order_id} shipped"


def configure_django(url: str) -> None:
    db = conninfo_to_dict(url)
    settings.configure(
        INSTALLED_APPS=[],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db.get("dbname"),
                "USER": db.get("user", ""),
                "PASSWORD": db.get("password", ""),
                "HOST": db.get("host", ""),
                "PORT": db.get("port", ""),
            }
        },
    )
    django.setup()


def main() -> None:
    app.sync.setup()
    configure_django(os.environ.get("SONIQ_DATABASE_URL") or app.sync.database_url())
    from django.db import transaction

    from soniq.contrib.django import enqueue

    with transaction.atomic():
        # ... Order.objects.create(...) would go here ...
        kept = enqueue(ship_order, order_id=1)
    try:
        with transaction.atomic():
            dropped = enqueue(ship_order, order_id=2)
            raise RuntimeError("out of stock")  # rolls back the order and the job
    except RuntimeError:
        pass

    app.sync.run_worker(run_once=True)  # in a project: `soniq worker` in its own process
    assert app.sync.get_job(dropped) is None
    print("result:", app.sync.get_result(kept))
    assert app.sync.get_result(kept) == "order 1 shipped"
    app.sync.close()
    print("OK django")


if __name__ == "__main__":
    main()
