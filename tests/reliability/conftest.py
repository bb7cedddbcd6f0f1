"""The reliability harness: corral under test, a span receiver, and one report per scenario.

Fixtures a scenario uses (besides ``corral`` and ``mode`` from tests/conftest.py):

* ``start_corral(mode, workers, *args, env=...)``: a chaos-app corral in
  ``mode`` whose spans go to this test's ``otlp`` receiver; returns it ready.
* ``otlp``: the ``OtlpReceiver`` (``count(kind)``).
* ``report``: the test's ``ScenarioReport``. Fill it in; it is appended to
  the results file at teardown with the outcome, pass or fail.

A scenario, in short (its docstring's first line is its name in the report)::

    def test_hung_worker(start_corral, mode, otlp, report):
        '''Hung worker: detected and replaced'''
        server = start_corral(mode, 2, "--worker-timeout", "2")
        spec = LoadSpec(server.base_url + "/slow?seconds=0.05", rate=50, duration=None)
        with LoadGenerator(spec) as load:
            ...  # inject the fault, wait for its events
        result = load.result()
        report.faults = "one /hang?seconds=60 request"
        report.record_load(result, "why each failure could not be avoided")
        report.events = sink_counts(server, {"crash": "1"}, server.scrape(), otlp)
        report.record_resources("end", sample(server.pid))
        report.figures["detected after s"] = 2.4
        assert ...

Results go to ``$CORRAL_RELIABILITY_RESULTS`` (default
``.reliability/results.jsonl``), emptied once per session;
``scripts/reliability_report.py`` renders them as ``RELIABILITY.md``.

Tests marked ``soak`` run only when asked for (``-m soak``, as ``make soak``
does), never in ``make test``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, CorralProcess
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.report import ScenarioReport, append

RESULTS_ENV = "CORRAL_RELIABILITY_RESULTS"
DEFAULT_RESULTS = ROOT / ".reliability" / "results.jsonl"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

StartCorral = Callable[..., CorralProcess]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long-running soak test; run with -m soak")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect soak tests unless the ``-m`` expression names them."""
    if "soak" in (config.option.markexpr or ""):
        return
    soaks = [item for item in items if item.get_closest_marker("soak")]
    if soaks:
        config.hook.pytest_deselected(items=soaks)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    item.stash.setdefault(_REPORTS, {})[rep.when] = rep
    return rep


@pytest.fixture(scope="session")
def results_path() -> Path:
    path = Path(os.environ.get(RESULTS_ENV, DEFAULT_RESULTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.close()


@pytest.fixture
def start_corral(corral: StartCorral, otlp: OtlpReceiver) -> StartCorral:
    """``start_corral(mode, workers, *args, env=None, wait=True)``: the chaos app, ready."""

    def start(
        mode: str, workers: int, *args: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> CorralProcess:
        server = corral(
            "--workers", str(workers), "--mode", mode, *args, env={**otlp.env(), **(env or {})}
        )  # fmt: skip
        if wait:
            server.wait_ready(workers)
        return server

    return start


@pytest.fixture
def report(request: pytest.FixtureRequest, results_path: Path) -> Iterator[ScenarioReport]:
    """This test's report; the scenario name defaults to the test's docstring's first line."""
    function = request.function
    doc = (function.__doc__ or function.__name__).strip().splitlines()[0].rstrip(".")
    mode = (
        request.node.callspec.params.get("mode", "-") if hasattr(request.node, "callspec") else "-"
    )
    record = ScenarioReport(scenario=doc, mode=str(mode), test=request.node.nodeid)
    began = time.monotonic()
    yield record
    record.duration_s = round(time.monotonic() - began, 1)
    reports = request.node.stash.get(_REPORTS, {})
    call = reports.get("call")
    record.outcome = call.outcome if call is not None else "error"
    append(results_path, record)
