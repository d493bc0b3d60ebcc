"""Without the ``metrics`` extra (prometheus-client), soniq.contrib.metrics and
``soniq worker --metrics-port`` fail at once, naming the fix."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

import soniq.contrib
from soniq.cli import cli
from soniq.errors import SoniqError

FIX = "pip install 'soniq[metrics]'"


@pytest.fixture
def no_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import prometheus_client`` fail, and soniq.contrib.metrics import afresh."""
    for name in list(sys.modules):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "soniq.contrib.metrics", raising=False)
    monkeypatch.delattr(soniq.contrib, "metrics", raising=False)


@pytest.mark.usefixtures("no_prometheus")
def test_import_without_the_extra_names_the_fix() -> None:
    with pytest.raises(SoniqError) as info:
        import soniq.contrib.metrics  # noqa: F401
    assert info.value.error_code == "SONIQ_EXTRA_MISSING"
    assert "prometheus-client" in str(info.value)
    assert FIX in str(info.value)


@pytest.mark.usefixtures("no_prometheus")
def test_worker_metrics_port_without_the_extra_fails_at_once() -> None:
    result = CliRunner().invoke(
        cli,
        ["worker", "--metrics-port", "9108"],
        env={"SONIQ_JOBS_MODULES": "no_such_module_soniq_test"},
    )
    assert result.exit_code == 1, (result.output, result.exception)
    assert "SONIQ_EXTRA_MISSING" in result.output
    assert FIX in result.output
    assert "no_such_module_soniq_test" not in result.output  # before the jobs are loaded
