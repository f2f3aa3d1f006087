"""pytest wiring for the end-to-end suite: one real control plane per session.

The ``cluster`` fixture brings the whole stack up once (``cluster.Cluster``) and tears it down
at the end of the session whatever happened; its finalizer then fails the session if any
process of the run is still alive. When a test fails, the last lines of every component's log
are printed under it (``INFERSCALE_E2E_KEEP=1`` keeps the whole work directory).

Tests do not depend on their order: each works in its own namespaces, which are emptied after
it (HPAs, Deployments, pods, simulators), and none relies on another's state.
``INFERSCALE_E2E_ORDER=reverse`` or ``random`` (``random:SEED`` to repeat one) runs them in
another order to prove it.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.cluster import Cluster  # noqa: E402
from e2e.procs import log  # noqa: E402

_CLUSTER: Cluster | None = None


@pytest.fixture(scope="session")
def cluster():
    global _CLUSTER
    c = Cluster()
    _CLUSTER = c
    try:
        c.start()
    except BaseException:
        c.failed = True
        c.stop()
        raise
    yield c
    c.stop()
    leftovers = c.procs.leftovers()
    _CLUSTER = None
    assert not leftovers, f"processes left behind after teardown: {leftovers}"
    log("teardown complete: no process of the run is left")


def pytest_collection_modifyitems(config, items):
    order = os.environ.get("INFERSCALE_E2E_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("random"):
        _, _, seed = order.partition(":")
        seed = int(seed) if seed else random.randrange(1 << 31)
        random.Random(seed).shuffle(items)
        log(f"test order shuffled with INFERSCALE_E2E_ORDER=random:{seed}")
    elif order:
        raise pytest.UsageError(f"INFERSCALE_E2E_ORDER={order!r}: use reverse, random or random:SEED")
    log("test order: " + ", ".join(item.name for item in items))


@pytest.fixture(autouse=True)
def empty_the_test_namespaces(request):
    """After each test, empties the namespaces it created (see ``Cluster.clear_namespace``)."""
    if "cluster" not in request.fixturenames:
        yield
        return
    c = request.getfixturevalue("cluster")
    before = len(c.test_namespaces)
    yield
    for namespace in c.test_namespaces[before:]:
        c.clear_namespace(namespace)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed and _CLUSTER is not None:
        _CLUSTER.failed = True
        try:
            report.sections.append(("component logs (last 50 lines each)",
                                    _CLUSTER.log_tails(50)))
        except Exception as e:  # the report must not fail because a log is gone
            report.sections.append(("component logs", f"unavailable: {e}"))
