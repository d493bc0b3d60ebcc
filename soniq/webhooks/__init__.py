"""Lifecycle webhooks: signed (Standard Webhooks) HTTP POSTs delivered as soniq jobs.

``app.webhooks`` manages subscriptions; receivers check requests with :func:`verify`.
See docs/webhooks.md.
"""

from soniq.webhooks.signing import generate_secret, sign, verify

__all__ = ["EVENTS", "Webhooks", "generate_secret", "sign", "verify"]


def __getattr__(name: str) -> object:
    # the manager imports soniq.db (and the app's modules): loaded on first use only, so a
    # receiver importing soniq.webhooks.verify pulls in no more than it needs
    if name in ("Webhooks", "EVENTS"):
        from soniq.webhooks import manager

        return getattr(manager, name)
    raise AttributeError(name)
