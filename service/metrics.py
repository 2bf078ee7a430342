"""Prometheus metrics. Job metrics are read from Redis at scrape time, so any API replica
reports the whole fleet: jobs by status, attempts, rounds, seconds per phase, queue depth,
live workers and the adapters they hold. Request latency is per API process."""

from __future__ import annotations

import logging

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from service.store import FINAL, Store

log = logging.getLogger(__name__)


class StoreCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        try:
            m = self.store.metrics()
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.warning("metrics: store unreachable: %s", exc)
            up = GaugeMetricFamily("tta_store_up", "1 when the job store (Redis) answered this scrape.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("tta_store_up", "1 when the job store (Redis) answered this scrape.")
        up.add_metric([], 1)
        yield up
        live = GaugeMetricFamily("tta_jobs", "Jobs queued or running now.", labels=["status"])
        done = CounterMetricFamily("tta_jobs_finished", "Jobs finished, by final status.", labels=["status"])
        for status in ("queued", "running"):
            live.add_metric([status], max(0, m["jobs_by_status"].get(status, 0)))
        for status in FINAL:
            done.add_metric([status], m["jobs_by_status"].get(status, 0))
        yield live
        yield done
        s = m["stats"]
        yield CounterMetricFamily("tta_attempts", "Attempts sampled and stored.", value=s.get("attempts", 0))
        yield CounterMetricFamily("tta_rounds", "Rounds finished.", value=s.get("rounds", 0))
        yield CounterMetricFamily("tta_cache_hits", "Jobs answered from the result cache.", value=s.get("cache_hits", 0))
        phase = CounterMetricFamily("tta_phase_seconds", "Seconds spent per phase of the solve loop.", labels=["phase"])
        for p in ("generate", "verify", "train"):
            phase.add_metric([p], s.get(f"{p}_s", 0.0))
        yield phase
        q = GaugeMetricFamily("tta_queue_depth", "Queue entries: waiting for a worker, or in progress.", labels=["state"])
        q.add_metric(["waiting"], m["queue_waiting"])
        q.add_metric(["in_progress"], m["queue_in_progress"])
        yield q
        yield GaugeMetricFamily("tta_workers", "Workers with a recent heartbeat.", value=m["workers"])
        yield GaugeMetricFamily("tta_active_adapters", "Per-job LoRA adapters held by live workers.",
                                value=m["active_adapters"])


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(store))
        self.request_seconds = Histogram(
            "tta_http_request_seconds", "HTTP request latency by route.", ["method", "route", "status"],
            registry=self.registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
