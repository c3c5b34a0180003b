"""The served OpenAPI schema against the server that serves it: a bounded schemathesis run.

Schemathesis reads /openapi.json from the API process and runs every phase its CLI runs
(schema examples, coverage of each parameter's edges and of methods a path lacks, fuzzing, and
stateful sequences that follow the schema's links), with a fixed seed and example budget so CI
gets the same ~2,000 requests each time in under half a minute. Allowed: zero server errors,
zero responses that the schema does not describe (status, content type, body, headers, Allow),
zero schema-violating requests accepted.

One check is off: `positive_data_acceptance` (a schema-valid request must not be refused). The
API refuses, with a documented 4xx, what a schema cannot say: a cursor it did not issue, a file
name without a supported extension, a knowledge base that does not exist.

The API serves two models of the session's tritonserver: `synthetic` (every chat request, fast
whatever max_tokens the fuzzer picks) and `minilm` (the test knowledge bases' embedder), so every
dependency is up and a 5xx can only be the API's own fault.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.engine.recorder import ScenarioRecorder

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import ALICE_KEY, EXAMPLE_MODELS, ApiProcess, api_env

pytestmark = pytest.mark.triton

SEED = 21
MAX_EXAMPLES = 50  # per operation and phase: about 2,000 requests, 20 s on 2 cores


@pytest.fixture(scope="module")
def served(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    models = tmp_path_factory.mktemp("schema-models")
    for name in ("synthetic.yaml", "minilm.yaml"):
        (models / name).write_text((EXAMPLE_MODELS / name).read_text())
    state = tmp_path_factory.mktemp("schema-state")
    env = {**api_env(triton, models, state), "KUBECHAT_DEFAULT_MODEL": "synthetic"}
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


def test_the_api_answers_as_its_schema_says(served: ApiProcess) -> None:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES},
            "headers": {"Authorization": f"Bearer {ALICE_KEY}"},
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config)
    failures: list[str] = []
    requests = 0
    finished = False
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += len(event.recorder.interactions)
            failures += _failures(event.recorder)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"schemathesis error: {event!r}"[:1000])
        elif isinstance(event, events.EngineFinished):
            finished = True
            failures += [f"after the run: {f.title}" for f in event.failures]
    assert finished
    assert requests > 1000, f"only {requests} requests were made"
    assert not failures, f"{len(failures)} failures (log: {served.log}):\n" + "\n".join(failures[:20])


def _failures(recorder: ScenarioRecorder) -> list[str]:
    found = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status.value != "failure":
                continue
            interaction = recorder.interactions.get(case_id)
            request, response = (interaction.request, interaction.response) if interaction else (None, None)
            sent = f"{request.method} {request.uri}" if request else "?"
            got = f"{response.status_code} {response.content[:300]!r}" if response else "no response"
            title = check.failure_info.failure.title if check.failure_info else check.name
            found.append(f"{recorder.label}: {check.name} ({title}): {sent} -> {got}")
    return found
