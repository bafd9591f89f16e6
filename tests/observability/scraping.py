"""Reading a server's /metrics as Prometheus would."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return content_type, samples


async def scrape(port: int | None) -> Samples:
    """Every sample /metrics shows, by name and labels."""
    assert port is not None, "this server serves no metrics"
    content_type, samples = await asyncio.to_thread(_scrape, port)
    assert content_type.startswith("text/plain"), content_type
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a series that does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpcs(samples: Samples, service: str, method: str, code: str) -> float:
    """How many calls of a method ended with a status code."""
    return value(samples, "grpc_server_handled_total", grpc_service=service, grpc_method=method, grpc_code=code)
