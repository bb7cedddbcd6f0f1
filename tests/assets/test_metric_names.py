"""Every ``corral_*`` name in a dashboard or an alert exists in a real ``/metrics``.

A real corral (process mode, request metrics on, the default) serves a
request, is scraped, and the sample names of that scrape (histograms as
their ``_bucket``/``_sum``/``_count`` series, counters with ``_total``) are
the vocabulary the assets may use. A renamed metric fails here before an
operator finds an empty panel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.assets.promql import all_expressions, metric_names
from tests.conftest import CorralProcess

pytestmark = pytest.mark.integration


def test_every_metric_the_assets_use_is_exposed(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "2", "--mode", "process")
    server.wait_ready(2)
    assert server.get("/").status_code == 200
    exposed = server.scrape().names()
    used: dict[str, list[str]] = {}
    for expression in all_expressions():
        for name in metric_names(expression.expr):
            used.setdefault(name, []).append(expression.where)
    assert len(used) >= 15, sorted(used)
    unknown = {name: where for name, where in used.items() if name not in exposed}
    assert not unknown, f"not in /metrics: {unknown}"
