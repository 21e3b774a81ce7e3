"""``searchagent serve INDEX_DIR``: the REST QA endpoint (uvicorn, 127.0.0.1 by default).

SIGINT/SIGTERM shut down gracefully: /readyz turns 503 at once, new connections are
refused, and in-flight requests finish (up to ``server.request_timeout_s``).
"""

from __future__ import annotations

import signal
import socket
import sys

from searchagent.config import load_config


def register(sub) -> None:
    serve = sub.add_parser("serve", help="serve /v1/answer, /v1/search, /v1/feedback, "
                           "/healthz, /readyz, /metrics and /docs")
    serve.add_argument("index_dir")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--scheduler", choices=["fcfs", "priority"],
                       help="generation queue order (default priority)")
    serve.add_argument("--non-stall", dest="non_stall", action="store_true", default=None,
                       help="cut retrievals past the budget when generation would idle")
    serve.add_argument("--no-non-stall", dest="non_stall", action="store_false")
    serve.add_argument("--sessions", type=int, help="agent sessions running at once")
    serve.add_argument("--max-queue", type=int, help="admitted requests waiting beyond the "
                       "running sessions (then 429)")
    serve.add_argument("--timeout", type=float, help="per-request deadline in seconds (504)")
    serve.add_argument("--retrieval-budget-ms", type=float)
    serve.add_argument("--api-key", help="require this key (Authorization: Bearer KEY)")
    serve.add_argument("--mode", choices=["bm25", "dense", "hybrid"], help="retrieval mode")
    serve.add_argument("--no-agent", action="store_true",
                       help="run the named strategies directly (auto = single)")
    serve.set_defaults(func=run_serve)


def run_serve(args) -> int:
    import uvicorn

    from retrievers.searcher import Searcher
    from searchagent.server.app import create_app

    config = load_config(args.config, cli={
        "server": {"host": args.host, "port": args.port, "scheduler": args.scheduler,
                   "non_stall": args.non_stall, "sessions": args.sessions,
                   "max_queue": args.max_queue, "request_timeout_s": args.timeout,
                   "retrieval_budget_ms": args.retrieval_budget_ms, "api_key": args.api_key},
        "retrieval": {"mode": args.mode}})
    server_cfg = config.server
    searcher = Searcher(args.index_dir, config)
    app = create_app(searcher, config, use_agent=not args.no_agent)
    listener = socket.socket(socket.AF_INET6 if ":" in server_cfg.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_cfg.host, server_cfg.port))
    port = listener.getsockname()[1]
    server = draining_server(uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=int(server_cfg.request_timeout_s) + 5,
        access_log=False), app.state)
    print(f"searchagent: serving {args.index_dir} on http://{server_cfg.host}:{port} "
          f"(scheduler={server_cfg.scheduler}, non_stall={server_cfg.non_stall}, "
          f"sessions={server_cfg.sessions}); docs at /docs", flush=True)
    # uvicorn re-raises the stop signal after its graceful shutdown; with a Python
    # handler in place that re-raise returns here instead of killing the process
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        searcher.close()
    print("searchagent: stopped", file=sys.stderr, flush=True)
    return 0


def draining_server(config, app_state):
    """A uvicorn.Server that marks the service as draining the moment a stop signal
    lands, so /readyz and new /v1/answer calls get 503 while in-flight requests finish."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            service = getattr(app_state, "service", None)
            if service is not None:
                service.draining = True
            super().handle_exit(sig, frame)

    return DrainingServer(config)
