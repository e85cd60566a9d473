"""Prometheus metrics, computed at scrape time from the job table and the live services.

Job counts come from SQLite rather than from in-process counters because jobs are run by other
processes and survive restarts; the numbers a scrape returns are therefore exact, not per-process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from osteoscan.server.store import JobStore

#: Histogram buckets of job run time (s): from a warm GPU (~1 s) to a slow CPU on a large scan.
DURATION_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ServiceCollector(Collector):
    def __init__(self, store: JobStore, live: Callable[[], dict[str, Any]]) -> None:
        self.store, self.live = store, live

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("osteoscan_jobs", "Jobs in the store by state", labels=["state"])
        for state, n in self.store.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        sends = GaugeMetricFamily("osteoscan_result_sends", "Jobs by state of sending results to the PACS",
                                  labels=["state"])
        for state, n in self.store.send_counts().items():
            sends.add_metric([state], n)
        yield sends
        durations = sorted(self.store.durations())
        buckets = [(str(b), sum(1 for d in durations if d <= b)) for b in DURATION_BUCKETS_S]
        buckets.append(("+Inf", len(durations)))
        hist = HistogramMetricFamily("osteoscan_job_duration_seconds", "Run time of finished jobs")
        hist.add_metric([], buckets, sum_value=sum(durations))
        yield hist
        live = self.live()
        yield GaugeMetricFamily("osteoscan_workers_alive", "Worker processes alive", value=live["workers_alive"])
        yield GaugeMetricFamily("osteoscan_workers_configured", "Worker processes configured",
                                value=live["workers_configured"])
        yield CounterMetricFamily("osteoscan_worker_restarts", "Worker processes restarted after dying",
                                  value=live["worker_restarts"])
        yield CounterMetricFamily("osteoscan_dicom_instances_received", "DICOM instances stored by C-STORE",
                                  value=live["dicom_received"])
        yield CounterMetricFamily("osteoscan_dicom_instances_sent", "Result instances sent to the PACS",
                                  value=live["dicom_sent"])
        yield CounterMetricFamily("osteoscan_uploads_rejected", "Uploads refused at intake (this process)",
                                  value=live["uploads_rejected"])


def render_metrics(store: JobStore, live: Callable[[], dict[str, Any]]) -> bytes:
    """The Prometheus text exposition of the service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServiceCollector(store, live))
    return generate_latest(registry)
