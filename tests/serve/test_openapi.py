"""Schemathesis against the server's own OpenAPI schema, bounded in examples and time: no
generated request, valid or not, gets a 5xx; invalid ones get a 4xx; answers match the
documented schema (status codes, content types, bodies)."""

from __future__ import annotations

import time

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test dependency")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               negative_data_rejection, response_schema_conformance,
                                               status_code_conformance)

from .conftest import copy_index, running_server  # noqa: E402

EXAMPLES = 15      # per operation and mode (positive, negative)
TIME_BUDGET_S = 150
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_server(base_index, tmp_path_factory):
    # Its own copy of the index and tight limits: generated writes and huge k stay cheap.
    path = copy_index(base_index, tmp_path_factory, "fuzzed")
    with running_server(path, "--max-texts", 4, "--max-k", 20, "--max-candidates", 8, "--max-text-chars", 2000,
                        "--max-body-bytes", 200_000, "--max-wait-ms", 1,
                        log_dir=tmp_path_factory.mktemp("fuzz-logs")) as url:
        yield url


def test_api_conforms_to_its_schema(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/rerank", "/encode", "/documents", "/stats", "/health",
                                              "/metrics"}
    deadline = time.monotonic() + TIME_BUDGET_S
    tried = 0
    for operation in operations:
        # (a GET without parameters has no invalid request to generate)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() != "GET" else [])
        for mode in modes:
            if time.monotonic() > deadline:
                break

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                case.call_and_validate(base_url=fuzz_server, checks=CHECKS, timeout=60)

            run()
            tried += 1
    assert tried >= len(operations), "ran out of the time budget before every operation was fuzzed"
