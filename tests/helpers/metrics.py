"""A server's Prometheus metrics (`--metrics-listen`), scraped over HTTP."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from peat_sync.bench.launcher import ServerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> Samples:
    """Every sample of the server's /metrics, keyed by name and labels."""
    match = server.wait_for_log(r"metrics on (http://\S+/metrics)")
    with urllib.request.urlopen(match[1], timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
