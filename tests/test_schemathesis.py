"""Schemathesis against the real server (uvicorn on 127.0.0.1, the real index and GGUF
model): requests generated from ``/openapi.json``, valid and invalid, bounded per route
(``/v1/answer`` and its stream get few: each one runs the model). Every response must be
no 5xx and must match the documented status, content type, headers and body schema;
valid requests must not be refused (no 422), invalid ones must be."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test dependency: "
                                   "pip install -e '.[test]'")

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               negative_data_rejection,
                                               positive_data_acceptance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from searchagent.server.app import create_app  # noqa: E402
from tests.test_server import LiveServer, server_config  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# SEARCHAGENT_SCHEMATHESIS_SCALE=10 (and _SEED=N) for a deeper, randomised local run
SCALE = int(os.environ.get("SEARCHAGENT_SCHEMATHESIS_SCALE", "1"))
SEED = os.environ.get("SEARCHAGENT_SCHEMATHESIS_SEED")
EXAMPLES = {"POST /v1/answer": 3 * SCALE, "POST /v1/answer/stream": 2 * SCALE}  # model runs
DEFAULT_EXAMPLES, NEGATIVE_EXAMPLES = 25 * SCALE, 15 * SCALE
DEADLINE = {"POST /v1/answer": 40.0, "POST /v1/answer/stream": 40.0}   # seconds per example


@pytest.fixture(scope="module")
def live(searcher):
    from searchagent.generators.factory import make_generator

    config = server_config(max_body_bytes=65536).updated(
        {"generator": {"max_new_tokens": 8}, "agent": {"fewshot": 0}}, "test")
    server = LiveServer(create_app(searcher, config,
                                   generator=make_generator(config.generator)))
    yield server
    server.close()


def run_operation(operation, mode, url: str, failures: list[str], statuses: Counter) -> None:
    label = operation.label
    if mode == GenerationMode.NEGATIVE:
        examples, checks = NEGATIVE_EXAMPLES, CHECKS + [negative_data_rejection]
    else:
        examples, checks = EXAMPLES.get(label, DEFAULT_EXAMPLES), CHECKS + [positive_data_acceptance]

    @given(case=operation.as_strategy(generation_mode=mode))
    @seed(int(SEED or 0))
    @settings(max_examples=examples, derandomize=SEED is None, database=None,
              deadline=timedelta(seconds=DEADLINE.get(label, 10.0)),
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=url, timeout=120)
        statuses[(label, mode.value, response.status_code)] += 1
        # a 413 refuses the whole body before its fields are read (documented per route):
        # for an invalid body that is a rejection too, whichever field made it invalid
        applied = [c for c in checks if not (response.status_code == 413
                                             and c is negative_data_rejection)]
        try:
            case.validate_response(response, checks=applied)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 -- collect them all
            failures.append(f"{label} [{mode.value}] {response.status_code} "
                            f"body={case.body!r:.200}: {exc!s:.600}")

    check()


def test_generated_requests_get_no_5xx_and_match_the_schema(live):
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures: list[str] = []
    statuses: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/answer", "POST /v1/answer/stream", "POST /v1/search",
            "POST /v1/feedback"} <= labels, labels
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            run_operation(operation, mode, live.url, failures, statuses)
    summary = "\n".join(f"{k}: {n}" for k, n in sorted(statuses.items()))
    print(f"schemathesis: {sum(statuses.values())} requests in "
          f"{time.monotonic() - started:.1f} s\n{summary}")
    assert not [k for k in statuses if k[2] >= 500], summary
    assert not failures, "\n".join(failures[:20])
    assert any(k[0] == "POST /v1/answer" and k[2] == 200 for k in statuses), summary
