"""``osteoscan serve``: the edge service (REST API + web viewer + DICOM node + workers)."""

from __future__ import annotations

import argparse
import logging

HELP = "run the edge service: REST API, web viewer, DICOM node and job workers"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="TOML", help="configuration file (default: built-in defaults)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the documented default configuration and exit")
    parser.add_argument("--host", help="override api.host (the REST API / viewer bind address)")
    parser.add_argument("--port", type=int, help="override api.port")
    parser.add_argument("--data-dir", help="override jobs.data_dir")
    parser.add_argument("--workers", type=int, help="override jobs.workers")


def run(args: argparse.Namespace) -> int:
    from osteoscan.server.config import DEFAULT_TOML, load_config

    if args.print_config:
        print(DEFAULT_TOML, end="")
        return 0
    import uvicorn

    from osteoscan.server.api import create_app
    from osteoscan.server.service import Service

    config = load_config(args.config)
    api: dict[str, object] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    jobs: dict[str, object] = {k: v for k, v in (("data_dir", args.data_dir), ("workers", args.workers))
                               if v is not None}
    if api or jobs:
        config = config.replace(**({"api": api} if api else {}), **({"jobs": jobs} if jobs else {}))
    service = Service(config)
    app = create_app(service)
    if config.api.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the API listens on %s, not only on this machine: keep the token secret", config.api.host)
    where = config.api.token_file or config.data_dir / "api_token"
    log.info("viewer and API on http://%s:%d/ (token: %s)", config.api.host, config.api.port,
             "api.token in the config" if config.api.token else where)
    server = uvicorn.Server(uvicorn.Config(app, host=config.api.host, port=config.api.port, log_config=None,
                                           access_log=False, lifespan="on"))
    server.run()
    return 0
