"""How the build on Ray Data (``index.build_ray``) uses Ray: the session it runs in, task
retries, Ray options passed without deprecation warnings, and per-stage timing.

Ray is imported unguarded: import this through ``index.build_ray``, which names the extra to
install when Ray Data is missing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from contextlib import contextmanager

import ray

from searchagent.errors import InputError

RETRIES = 3                 # task retries, actor restarts


@contextmanager
def timed(timings: dict, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, num_gpus: int, timings: dict):
    """Use this process's Ray, else join ``address`` or start Ray on this machine's cores;
    shut down only what was started here. Workers' logs stay off the console."""
    started = not ray.is_initialized()
    with timed(timings, "ray_start"):
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if started and address:
            check_reachable(address)
            ray.init(address=address, **quiet)
        elif started:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
    try:
        have = ray.cluster_resources().get("GPU", 0)
        if num_gpus > have:
            raise InputError(f"--num-gpus {num_gpus}, but the Ray cluster has {have:g} GPU(s)",
                             field="num_gpus")
        yield
    finally:
        if started:
            ray.shutdown()


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a ``HOST:PORT`` nothing accepts connections at, before ``ray.init`` retries
    it for about 14 minutes ('auto' and ``ray://`` addresses are Ray's to resolve)."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"--ray-address {address}: no Ray cluster answers there "
                         f"({exc.strerror or exc})", field="ray_address") from None


def remote_args(call, *args, **kwargs):
    """``call`` with Ray options that Ray 2.60 has no named parameter for (retries, restarts,
    a scheduling strategy) and so warns about as deprecated ``ray_remote_args``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return call(*args, **kwargs)

