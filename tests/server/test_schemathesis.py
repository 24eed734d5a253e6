"""A bounded schemathesis run against /openapi.json: whatever it sends, the server never answers 5xx.

(schemathesis' pytest plugin does not load under this pytest, so the operations are driven with
hypothesis directly: every operation, positive and negative data, a few examples each.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

EXAMPLES = 10


@pytest.mark.slow
def test_no_server_errors(settings: Any) -> None:
    from fmgguf.server.app import create_app

    app = create_app(settings, max_queue=4)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    failures: list[str] = []
    calls = 0

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @hsettings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                       suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                nonlocal calls
                response = case.call()
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"{case.operation.label} -> {response.status_code}: {response.text[:200]}  "
                                    f"({case.as_curl_command()})")

            try:
                run()
            except Unsatisfiable:  # no invalid input exists for an operation without parameters
                assert mode is GenerationMode.NEGATIVE, op.label
    assert calls >= len(operations) * 2
    assert not failures, "\n".join(failures[:10])
