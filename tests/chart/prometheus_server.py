"""A real Prometheus server (Debian's, from scripts/ensure-chart-tools.sh) for one test: its own
temporary directory and a free loopback port, scraping the targets it is given every second."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import read_log, start_until_ready, stop_process
from tests.support.servers import free_port

SCRAPE_INTERVAL = "1s"


@dataclass
class PrometheusServer:
    binary: str
    directory: Path
    job: str
    targets: list[str]
    target_labels: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self) -> PrometheusServer:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [
                {
                    "job_name": self.job,
                    # The labels the Kubernetes service discovery of a ServiceMonitor would add,
                    # so the chart's own queries select these series as they would in a cluster.
                    "static_configs": [{"targets": self.targets, "labels": self.target_labels}],
                }
            ],
        }
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = start_until_ready(
            [
                self.binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            name=f"prometheus on port {self.port}",
            ready=self._ready,
            log_path=self.log_path,
            timeout=30,
        )
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector; fails on any error Prometheus reports."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.url + "/api/v1/query", params={"query": promql})
        body = response.json()
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        stop_process(self.process, name=f"prometheus on port {self.port}")
