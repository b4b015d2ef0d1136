"""`make ui [PORT=5000]`: the MLflow UI over the mirror of every run (pipeline/runs/tracking.py).

MLflow is an optional part: `make ui` installs it on first use, and first mirrors every finished run
not mirrored yet (those trained before it was installed), so the UI shows them all.

Where: `tracking.uri` (TRACKING=): empty = the embedded store runs/mlflow.db, opened here with no
server to start; a team's server has its own UI; off mirrors nothing.
"""

from __future__ import annotations

import subprocess
import sys

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.log import log
from pipeline.runs.tracking import backfill, shown, tracking_uri


def ui_command(config: Config, host: str, port: int) -> list[str]:
    uri = tracking_uri(config) or f"sqlite:///{config.path('runs', 'mlflow.db')}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if not config.tracking.uri:
        command += ["--default-artifact-root", config.path("runs", "mlflow-artifacts").as_uri()]
    return command


def ui(config: Config, host: str, port: int) -> int:
    if config.tracking.uri not in ("", "off") and not config.tracking.uri.startswith("sqlite:"):
        log.info(f"tracking.uri is the server {shown(config.tracking.uri)}: open it in a browser, it has its own UI")
        return 0
    config.path("runs").mkdir(parents=True, exist_ok=True)
    if tracking_uri(config) is not None:  # runs made before MLflow was installed (make all leaves it out)
        log.info(f"mirroring the finished runs into MLflow: {backfill(config)} run folders looked at")
    log.info(f"MLflow UI for {tracking_uri(config) or 'the project store'} on http://{host}:{port} (Ctrl-C stops it)")
    log.info("an Optuna study live: pip install optuna-dashboard && optuna-dashboard sqlite:///runs/tune/<study>.db")
    return subprocess.call(ui_command(config, host, port))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.stages.ui", __doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address the UI listens on (localhost by default)")
    parser.add_argument("--port", type=int, default=5000, help="its port (PORT=)")
    args = parser.parse_args(argv)
    status: list[int] = []
    code = run_stage(lambda config: status.append(ui(config, args.host, args.port)), args)
    return code or (status[0] if status else 0)


if __name__ == "__main__":
    sys.exit(main())
