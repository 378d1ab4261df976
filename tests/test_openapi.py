"""The API's OpenAPI 3.1 document is valid (checked by openapi-spec-validator), names every
address the daemon serves, and the daemon's real answers match its schemas (jsonschema)."""

from __future__ import annotations

import jsonschema
import pytest
from openapi_spec_validator import validate

from synctask.server.openapi import document

from .served import api, daemon, make_workdir, wait_until


@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")  # the app's keys are plain strings
def test_the_document_is_valid_openapi_3_1_and_covers_every_route():
    from synctask.executor import SyncTaskExecutor
    from synctask.server.api import make_app
    from synctask.server.guard import Policy

    spec = document()
    validate(spec)  # raises on any departure from the OpenAPI 3.1 schema
    app = make_app(SyncTaskExecutor(), Policy(token="t"))
    served = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    served -= {"/", "/static"}
    assert served <= set(spec["paths"]), served - set(spec["paths"])


def check(spec: dict, path: str, method: str, status: int, body: dict) -> None:
    content = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in content:
        content = spec["components"]["responses"][content["$ref"].rsplit("/", 1)[1]]
    schema = {**content["content"]["application/json"]["schema"], "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_the_daemons_answers_match_the_document(tmp_path):
    spec = document()
    with daemon(make_workdir(tmp_path)) as (_, url):
        wait_until(lambda: api(url, path="/api/plans/slow")[1]["done"] > 50)
        api(url, "POST", "/api/plans/other/pause")
        for path, concrete in (("/api/plans", "/api/plans"), ("/api/plans/{name}", "/api/plans/slow"),
                               ("/api/plans/{name}/runs", "/api/plans/slow/runs"),
                               ("/api/tasks", "/api/tasks?state=done&limit=3"),
                               ("/api/tasks", "/api/tasks?state=running"), ("/api/vendors", "/api/vendors"),
                               ("/api/series", "/api/series"), ("/healthz", "/healthz"),
                               ("/api/openapi.json", "/api/openapi.json")):
            status, body = api(url, path=concrete)
            assert status == 200, (concrete, body)
            check(spec, path, "get", 200, body)
        status, body = api(url, "POST", "/api/plans/other/resume")
        check(spec, "/api/plans/{name}/{action}", "post", status, body)
        for method, concrete, path in (("GET", "/api/plans/nope", "/api/plans/{name}"),
                                       ("GET", "/api/tasks?state=lost", "/api/tasks"),
                                       ("POST", "/api/plans/slow/fly", "/api/plans/{name}/{action}")):
            status, body = api(url, method, concrete)
            assert status in (400, 404), body
            check(spec, path, method.lower(), status, body)
        assert api(url, path="/api/openapi.json")[1] == spec
