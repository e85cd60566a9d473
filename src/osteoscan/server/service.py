"""The running service: job store + worker pool + DICOM node + result sender, started and stopped
together (by the web app's lifespan, so ``osteoscan serve`` and the tests run the same thing)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from osteoscan import __version__
from osteoscan.server.config import ServerConfig, resolve_token
from osteoscan.server.render import ImageCache
from osteoscan.server.store import JobStore
from osteoscan.server.worker import WorkerPool, WorkerSettings

log = logging.getLogger(__name__)


class Service:
    """Owns every long-lived part of the edge service; :meth:`start` / :meth:`stop` are idempotent."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(config.data_dir)
        self.token = resolve_token(config)
        dest = config.dicom.destination
        self.worker_settings = WorkerSettings(
            data_dir=str(config.data_dir), backend=config.pipeline.backend, device=config.pipeline.device,
            precision=config.pipeline.precision, outputs=tuple(config.pipeline.outputs),
            weights_dir=config.pipeline.weights_dir,
            send_results=dest.enabled, retain_inputs=config.jobs.retain_inputs,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self.pool = WorkerPool(self.store, self.worker_settings, config.jobs.workers, config.jobs.max_attempts)
        self.node: Any = None
        self.sender: Any = None
        self.images = ImageCache()
        self.uploads_rejected = 0
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self.pool.start()
            if self.config.dicom.enabled:
                from osteoscan.server.dicom_node import DicomNode, ResultSender

                self.node = DicomNode(self.config.dicom, self.store)
                self.node.start()
                if self.config.dicom.destination.enabled:
                    self.sender = ResultSender(self.config.dicom.destination, self.config.dicom.ae_title,
                                               self.store)
                    self.sender.start()
            self._started = True
            log.info("osteoscan %s service started (data in %s, %d worker(s))", __version__,
                     self.config.data_dir, self.config.jobs.workers)

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            if self.node is not None:
                self.node.stop()
            if self.sender is not None:
                self.sender.stop()
            self.pool.stop()
            self._started = False
            log.info("osteoscan service stopped")

    def live(self) -> dict[str, Any]:
        """Counters of the live parts (for /health and /metrics)."""
        return {
            "workers_alive": self.pool.alive(),
            "workers_configured": self.config.jobs.workers,
            "worker_restarts": self.pool.restarts,
            "dicom_received": self.node.received if self.node else 0,
            "dicom_sent": self.sender.sent_instances if self.sender else 0,
            "uploads_rejected": self.uploads_rejected,
        }

    def health(self) -> dict[str, Any]:
        live = self.live()
        dicom = {"enabled": self.config.dicom.enabled}
        if self.node is not None:
            dicom.update(listening=self.node.listening, ae_title=self.config.dicom.ae_title, port=self.node.port)
        ok = live["workers_alive"] >= live["workers_configured"] and (not self.config.dicom.enabled or bool(dicom.get("listening")))
        return {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "workers_alive": live["workers_alive"],
            "workers_configured": live["workers_configured"],
            "jobs": self.store.counts(),
            "dicom": dicom,
            "send_destination": (f"{self.config.dicom.destination.ae_title}@{self.config.dicom.destination.host}:"
                                 f"{self.config.dicom.destination.port}" if self.sender else None),
        }
