"""Standard Webhooks signing and soniq.webhooks.verify, against the reference package."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
import standardwebhooks

from soniq import SoniqError
from soniq.webhooks import generate_secret, sign, verify

# The example of the Standard Webhooks specification (and of its reference libraries).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_example_and_the_reference() -> None:
    assert sign([SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    when = datetime.fromtimestamp(SPEC_TS, tz=timezone.utc)
    assert standardwebhooks.Webhook(SPEC_SECRET).sign(SPEC_ID, when, SPEC_BODY.decode()) == SPEC_SIG


def test_generated_secrets_are_standard_and_distinct() -> None:
    a, b = generate_secret(), generate_secret()
    assert a.startswith("whsec_") and a != b
    body, now = b'{"type":"job.succeeded"}', int(time.time())
    headers = {"webhook-id": "m1", "webhook-timestamp": str(now),
               "webhook-signature": sign([a, b], "m1", now, body)}  # fmt: skip
    for secret in (a, b):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "job.succeeded"}
        assert verify(body, headers, secret) == {"type": "job.succeeded"}
    assert verify(body.decode(), {k.upper(): v for k, v in headers.items()}, [b])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": None}, "missing header 'webhook-id'"),
        ({"webhook-timestamp": None}, "missing header 'webhook-timestamp'"),
        ({"webhook-signature": None}, "missing header 'webhook-signature'"),
        ({"webhook-timestamp": "soon"}, "not unix seconds"),
        ({"webhook-timestamp": "OLD"}, "stale timestamp"),
        ({"webhook-timestamp": "FUTURE"}, "stale timestamp"),
        ({"webhook-signature": "v1,AAAA"}, "bad signature"),
        ({"webhook-signature": "v2,whatever"}, "bad signature"),
        ({"webhook-id": "other"}, "bad signature"),
    ],
)
def test_verify_refuses_with_a_clear_message(change: dict[str, str | None], message: str) -> None:
    secret, body, now = generate_secret(), b'{"a":1}', int(time.time())
    headers = {"webhook-id": "m1", "webhook-timestamp": str(now),
               "webhook-signature": sign([secret], "m1", now, body)}  # fmt: skip
    for key, value in change.items():
        if value is None:
            del headers[key]
        elif value in ("OLD", "FUTURE"):
            ts = now - 301 if value == "OLD" else now + 301
            headers[key] = str(ts)
            headers["webhook-signature"] = sign([secret], "m1", ts, body)
        else:
            headers[key] = value
    with pytest.raises(SoniqError) as err:
        verify(body, headers, secret)
    assert err.value.error_code == "SONIQ_WEBHOOK_INVALID"
    assert message in err.value.message


def test_verify_tolerance_and_bad_secrets() -> None:
    secret, body = generate_secret(), b'{"a":1}'
    ts = int(time.time()) - 1000
    headers = {"webhook-id": "m", "webhook-timestamp": str(ts),
               "webhook-signature": sign([secret], "m", ts, body)}  # fmt: skip
    assert verify(body, headers, secret, tolerance=2000) == {"a": 1}
    for bad in ([], "whsec_%%%"):
        with pytest.raises(SoniqError) as err:
            verify(body, headers, bad, tolerance=2000)
        assert err.value.error_code == "SONIQ_WEBHOOK_INVALID"
    now = int(time.time())
    not_json = {**headers, "webhook-timestamp": str(now),
                "webhook-signature": sign([secret], "m", now, b"nope")}  # fmt: skip
    with pytest.raises(SoniqError, match="not JSON"):
        verify(b"nope", not_json, secret)
