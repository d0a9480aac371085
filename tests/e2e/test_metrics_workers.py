"""`GET /metrics` with `server.workers: 2`: whichever worker answers a scrape, it reports the
whole server's counts (prometheus-client's multiprocess mode, server/metrics.py), also after a
worker was killed and replaced (server/workers.py)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config import server_config
from tests.support.redis_topologies import wait_until
from tests.support.server import ServerProcess
from tests.support.tus import create
from tests.support.workers import one_client_per_worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CREATED = ("POST", "/files/", "201")


def _scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _assert_server_totals(client: httpx.Client, created: int) -> None:
    # The request before this scrape may have been answered by the other worker a moment before
    # that worker counted it out of flight (the gauge drops once the answer is sent): scraped
    # again, with a deadline, until only this scrape is in flight.
    deadline = time.monotonic() + 5
    samples = _scrape(client)
    while samples.get(("avs_requests_in_flight", frozenset())) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        samples = _scrape(client)
    method, route, status = CREATED
    assert samples.get(("tusd_uploads_created_total", frozenset())) == created
    requests = ("tusd_requests_total", frozenset({"method": method, "route": route, "status": status}.items()))
    assert samples.get(requests) == created
    # Read once from Redis by the answering worker, not one copy per worker added up.
    assert samples.get(("avs_uploads_open", frozenset())) == created
    # Only this scrape is being answered, server-wide (summed over the workers alive).
    assert samples.get(("avs_requests_in_flight", frozenset())) == 1


def test_a_scrape_reaches_one_worker_and_reports_both_workers_counts(tmp_path, token):
    config = server_config(tmp_path, "embedded", server={"workers": 2, "debug_endpoints": True})
    config["redis"]["embedded_dir"] = str(tmp_path / "redis")
    server = ServerProcess(tmp_path, config).start()
    try:
        assert server.process is not None
        parent = psutil.Process(server.process.pid)
        clients = one_client_per_worker(server)
        (first_pid, first), (_, second) = clients.items()
        auth = {"Authorization": f"Bearer {token('metrics-workers')}"}
        for _ in range(3):
            create(first, auth, 1000)
        for _ in range(2):
            create(second, auth, 1000)
        for _ in range(3):  # each worker answers scrapes, each time with both workers' counts
            _assert_server_totals(first, 5)
            _assert_server_totals(second, 5)

        # A killed worker's counts stay in the server's totals after the supervisor replaced it.
        first.close()
        os.kill(first_pid, signal.SIGKILL)
        wait_until(
            lambda: len([c for c in parent.children() if c.pid != first_pid and "--worker-fd" in c.cmdline()]) == 2,
            "the supervisor starts another worker",
        )
        create(second, auth, 1000)
        clients = one_client_per_worker(server)
        for client in clients.values():
            _assert_server_totals(client, 6)
        for client in [*clients.values(), second]:
            client.close()
    finally:
        server.stop()
