"""Schemathesis against the server's own OpenAPI schema, bounded in examples and time: no
generated request (valid or not) gets a 5xx, and answers match the documented schema."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test dependency")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               negative_data_rejection, response_schema_conformance,
                                               status_code_conformance)

from .conftest import copy_index, running_server  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_schema(base_index, tmp_path_factory):
    # Its own copy of the index and tight limits: generated writes and huge k stay cheap.
    path = copy_index(base_index, tmp_path_factory, "fuzzed")
    with running_server(path, "--max-texts", 4, "--max-k", 20, "--max-candidates", 8, "--max-text-chars", 2000,
                        "--max-body-bytes", 200_000, "--max-wait-ms", 1,
                        log_dir=tmp_path_factory.mktemp("fuzz-logs")) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance, negative_data_rejection], timeout=60)
