"""A minimal Django project in one module (settings, a view, its URL), on the test database.

Run as a script: it configures Django from SONIQ_DATABASE_URL, makes two requests through
Django's test client (one commits its order, one rolls back) and prints their job ids as JSON.
"""

from __future__ import annotations

import json
import os

import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict

SCHEMA = os.environ["SONIQ_SCHEMA"]
db = conninfo_to_dict(os.environ["SONIQ_DATABASE_URL"])
settings.configure(
    DEBUG=False,
    SECRET_KEY="not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
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

from django.db import connection, transaction  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from soniq.contrib.django import enqueue  # noqa: E402
from tests.integrations.jobs_app import ship  # noqa: E402


def place_order(request: HttpRequest, n: int) -> JsonResponse:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'INSERT INTO "{SCHEMA}".orders (id) VALUES (%s)', [n])
        job_id = enqueue(ship, order_id=n)
        if request.GET.get("fail"):
            transaction.set_rollback(True)
    return JsonResponse({"job_id": job_id})


urlpatterns = [path("orders/<int:n>", place_order)]

if __name__ == "__main__":
    from django.test import Client

    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE IF NOT EXISTS "{SCHEMA}".orders (id int PRIMARY KEY)')
    client = Client()
    kept = client.post("/orders/1").json()["job_id"]
    dropped = client.post("/orders/2?fail=1").json()["job_id"]
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{SCHEMA}".soniq_jobs')
        (count,) = cursor.fetchone()
    print(json.dumps({"kept": kept, "dropped": dropped, "jobs": count}))
