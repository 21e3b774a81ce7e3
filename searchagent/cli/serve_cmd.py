"""``searchagent serve INDEX_DIR``: the REST QA endpoint (uvicorn, 127.0.0.1 by default).

SIGINT/SIGTERM shut down gracefully: /readyz turns 503 at once, new connections are
refused, and in-flight requests finish (up to ``server.request_timeout_s``).
The API key comes from ``--api-key-file``, ``SEARCHAGENT__SERVER__API_KEY`` or (visible in
``ps``) ``--api-key``; listening beyond loopback without one warns on stderr.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from pathlib import Path

from searchagent.config import Config, ServerConfig, load_config
from searchagent.errors import InputError


def register(sub) -> None:
    serve = sub.add_parser("serve", help="serve /v1/answer (+ /stream), /v1/search, "
                           "/v1/feedback, /v1/documents, the web page at /, /healthz, "
                           "/readyz, /metrics and /docs")
    serve.add_argument("index_dir", help="an index folder")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--scheduler", choices=["fcfs", "priority"],
                       help="generation queue order (default priority)")
    serve.add_argument("--non-stall", dest="non_stall", action="store_true", default=None,
                       help="cut retrievals past the budget when generation would idle")
    serve.add_argument("--no-non-stall", dest="non_stall", action="store_false",
                       help="let retrievals run past the budget")
    serve.add_argument("--sessions", type=int, help="agent sessions running at once")
    serve.add_argument("--max-queue", type=int, help="admitted requests waiting beyond the "
                       "running sessions (then 429)")
    serve.add_argument("--timeout", type=float, help="per-request deadline in seconds (504)")
    serve.add_argument("--retrieval-budget-ms", type=float, help="retrieval time a "
                       "request may take while generation idles (server.retrieval_budget_ms)")
    serve.add_argument("--api-key", help="require this key (Authorization: Bearer KEY); "
                       "visible in ps: prefer --api-key-file or SEARCHAGENT__SERVER__API_KEY")
    serve.add_argument("--api-key-file", metavar="PATH",
                       help="require the key read from this file (its first line)")
    serve.add_argument("--mode", choices=["bm25", "dense", "hybrid"], help="retrieval mode")
    serve.add_argument("--allow-updates", dest="allow_updates", action="store_true",
                       default=None, help="enable POST/DELETE /v1/documents (this server "
                       "becomes the index's single writer)")
    serve.add_argument("--no-agent", action="store_true",
                       help="run the named strategies directly (auto = single)")
    serve.set_defaults(func=run_serve)


def run_serve(args) -> int:
    import uvicorn

    from retrievers.searcher import Searcher
    from searchagent.server.app import create_app

    config = serve_config(args)
    server_cfg = config.server
    warning = exposure_warning(server_cfg)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if server_cfg.allow_updates and not (server_cfg.api_key or _is_loopback(server_cfg.host)):
        raise InputError("--allow-updates beyond loopback needs an API key (--api-key or "
                         "--api-key-file): anyone could change the index",
                         field="allow_updates")
    if config.agent.policy_dir and not args.no_agent:
        from policies.online import check_journal_free
        from policies.persistence import load_policy

        load_policy(config.agent.policy_dir)     # a clear error now, not at app start-up
        check_journal_free(config.agent.policy_dir, "serve one policy folder from one "
                           "server, or give this one a copy of the folder")
    if config.generator.backend == "openai":        # a clear error now, not at app start-up
        from searchagent.generators.openai_http import check_api_key

        check_api_key(config.generator.api_key)
    listener = bound_socket(server_cfg.host, server_cfg.port)   # a busy port fails first
    searcher = None
    try:
        if server_cfg.allow_updates:
            from retrievers.live_searcher import LiveSearcher

            searcher = LiveSearcher(args.index_dir, config)
        else:
            searcher = Searcher(args.index_dir, config)
        searcher.check_mode(None)       # a mode the index lacks: one line, not a traceback
        app = create_app(searcher, config, use_agent=not args.no_agent)
        port = listener.getsockname()[1]
        started = (f"searchagent: serving {args.index_dir} on http://{server_cfg.host}:{port} "
                   f"(scheduler={server_cfg.scheduler}, non_stall={server_cfg.non_stall}, "
                   f"sessions={server_cfg.sessions}); docs at /docs")
        server = draining_server(uvicorn.Config(
            app, log_level="warning",
            timeout_graceful_shutdown=int(server_cfg.request_timeout_s) + 5,
            access_log=False), app.state, lambda: print(started, flush=True))
        # uvicorn re-raises the stop signal after its graceful shutdown; with a Python
        # handler in place that re-raise returns here instead of killing the process
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        server.run(sockets=[listener])
    finally:
        listener.close()
        if searcher is not None:
            searcher.close()
    print("searchagent: stopped", file=sys.stderr, flush=True)
    return 0


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port), or an InputError saying why not."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         field="port") from exc
    return listener


def serve_config(args) -> Config:
    """The resolved config of ``serve``, the API key read from ``--api-key-file`` if given."""
    api_key = args.api_key
    if api_key is not None and not api_key.strip():
        raise InputError("empty API key: the server would run without one", field="api_key")
    if args.host is not None and not args.host.strip():
        raise InputError("empty host: give an address (default 127.0.0.1)", field="host")
    if args.api_key_file:
        if api_key:
            raise InputError("give --api-key or --api-key-file, not both", field="api_key")
        api_key = _read_key(Path(args.api_key_file))
    return load_config(args.config, cli={
        "server": {"host": args.host, "port": args.port, "scheduler": args.scheduler,
                   "non_stall": args.non_stall, "sessions": args.sessions,
                   "max_queue": args.max_queue, "request_timeout_s": args.timeout,
                   "retrieval_budget_ms": args.retrieval_budget_ms, "api_key": api_key,
                   "allow_updates": getattr(args, "allow_updates", None)},
        "retrieval": {"mode": args.mode}})


def _read_key(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise InputError("key file missing (--api-key-file)", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the key file (--api-key-file): {exc}",
                         path=str(path)) from exc
    key = lines[0].strip() if lines else ""
    if not key:
        raise InputError("key file is empty (--api-key-file)", path=str(path))
    return key


def exposure_warning(server: ServerConfig) -> str | None:
    """A loud warning when the server listens beyond loopback without an API key."""
    if server.api_key or _is_loopback(server.host):
        return None
    return (f"searchagent: WARNING: listening on {server.host} (not loopback) WITHOUT an API "
            "key: anyone who can reach this port can use the server. Set one with "
            "--api-key-file PATH or SEARCHAGENT__SERVER__API_KEY, or bind 127.0.0.1.")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False                     # a host name: it may resolve to anything


def draining_server(config, app_state, on_started=None):
    """A uvicorn.Server that marks the service as draining the moment a stop signal
    lands, so /readyz and new /v1/answer calls get 503 while in-flight requests finish;
    ``on_started()`` runs once it accepts connections."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

        def handle_exit(self, sig, frame):
            service = getattr(app_state, "service", None)
            if service is not None:
                service.draining = True
            super().handle_exit(sig, frame)

    return DrainingServer(config)
