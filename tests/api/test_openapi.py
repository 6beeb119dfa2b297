"""The OpenAPI document says exactly what the app serves, in schemas its answers satisfy."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import falcon.inspect
import falcon.testing
import jsonschema
import pytest

from jobkit import App
from jobkit.api import HeadLikeGet, create_app
from jobkit.config import Settings
from tests.api.app import post, work

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# jobkit's router is Falcon's compiled router plus HEAD: inspected the same way
falcon.inspect.register_router(HeadLikeGet)(falcon.inspect.inspect_compiled_router)


def served(web: falcon.App) -> set[tuple[str, str]]:
    """(path, method) of every responder the app defines itself (not Falcon's 405/OPTIONS)."""
    return {(route.path, method.method.lower())
            for route in falcon.inspect.inspect_routes(web)
            for method in route.methods if not method.internal}


def documented(document: dict[str, object]) -> set[tuple[str, str]]:
    """(path, method) of every operation, a trailing slash removed (Falcon serves both spellings)."""
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(path.rstrip("/") or "/", method) for path, item in paths.items()
            for method in item if method in HTTP_METHODS}


def test_document_covers_every_route_and_method_and_no_other(client: falcon.testing.TestClient) -> None:
    document = client.simulate_get("/openapi.json").json
    served_here = served(client.app)
    heads = {(path, "head") for path, method in served_here if method == "get"}
    assert heads <= served_here  # HEAD answers on every GET route (said in info.description)
    assert documented(document) == served_here - heads
    assert "HEAD" in document["info"]["description"]


def test_the_seeds_trailing_slash_route_is_documented(client: falcon.testing.TestClient) -> None:
    paths = client.simulate_get("/openapi.json").json["paths"]
    assert paths["/{job_id}/"]["get"]["responses"] == paths["/{job_id}"]["get"]["responses"]


def test_document_is_openapi_3_with_resolvable_references(client: falcon.testing.TestClient) -> None:
    document = client.simulate_get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    text = str(document)
    for kind, names in document["components"].items():
        for name in names:
            assert f"#/components/{kind}/{name}" in text or kind == "securitySchemes"
    refs = [part.split("'")[0] for part in text.split("'$ref': '")[1:]]
    for ref in refs:
        _, _, kind, name = ref.split("/")
        assert name in document["components"][kind], ref


def test_every_operation_lists_its_responses(client: falcon.testing.TestClient) -> None:
    for path, item in client.simulate_get("/openapi.json").json["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            assert operation["summary"], (path, method)
            if path != "/healthz":
                assert "401" in operation["responses"], (path, method)


def test_security_follows_the_token_setting(jobkit_app: App) -> None:
    plain = falcon.testing.TestClient(create_app(Settings(), jobkit_app))
    open_doc = plain.simulate_get("/openapi.json").json
    assert open_doc["security"] == []
    guarded = falcon.testing.TestClient(create_app(Settings(api_token="t"), jobkit_app))
    doc = guarded.simulate_get("/openapi.json", headers={"Authorization": "Bearer t"}).json
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


# -- the schemas: every answer validates, and every oneOf picks exactly one branch ---

def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema`` whose ``#/components/…`` references resolve in ``document``."""
    return jsonschema.Draft202012Validator(schema | {"components": document["components"]})


def response_schema(document: dict[str, Any], path: str, status: str) -> dict[str, Any]:
    response = document["paths"][path]["get"]["responses"][status]
    return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def one_ofs(node: Any) -> Iterator[list[dict[str, Any]]]:
    """The branches of every ``oneOf`` in the document."""
    if isinstance(node, dict):
        if "oneOf" in node:
            yield node["oneOf"]
        for value in node.values():
            yield from one_ofs(value)
    elif isinstance(node, list):
        for value in node:
            yield from one_ofs(value)


@pytest.fixture
def answers(client: falcon.testing.TestClient, jobkit_app: App) -> dict[str, dict[str, Any]]:
    """Real answers of ``GET /{job_id}/`` and ``GET /v1/jobs/{job_id}``, by the job's kind."""
    ids = {"dict": post(client, "/", {"example": "data"}).json["id"],
           "stats-like": post(client, "/v1/tasks/echo", {"id": 1, "tube": "t", "state": "x"}).json["id"],
           "list": post(client, "/v1/tasks/echo", [1, 2]).json["id"],
           "failed": post(client, "/v1/jobs", {"task": "boom"}).json["id"],
           "cancelled": post(client, "/", {"a": 1}).json["id"]}
    client.simulate_delete(f"/v1/jobs/{ids['cancelled']}")
    for _ in range(4):
        work(jobkit_app)
    ids["queued"] = post(client, "/", {"example": "data"}).json["id"]  # no worker runs it
    return {"seed": {kind: client.simulate_get(f"/{job_id}/").json for kind, job_id in ids.items()},
            "v1": {kind: client.simulate_get(f"/v1/jobs/{job_id}").json for kind, job_id in ids.items()}}


def test_every_answer_satisfies_its_documented_schema(client: falcon.testing.TestClient,
                                                      answers: dict[str, dict[str, Any]]) -> None:
    document = client.simulate_get("/openapi.json").json
    seed = validator(document, response_schema(document, "/{job_id}", "200"))
    v1 = validator(document, response_schema(document, "/v1/jobs/{job_id}", "200"))
    assert answers["seed"]["queued"]["tube"] == "default"  # stats-job while queued
    assert answers["v1"]["queued"]["broker"] is not None
    for answer in answers["seed"].values():
        seed.validate(answer)  # a oneOf matching two branches fails here
    for answer in answers["v1"].values():
        v1.validate(answer)


def test_every_one_of_has_mutually_exclusive_branches(client: falcon.testing.TestClient,
                                                      answers: dict[str, dict[str, Any]]) -> None:
    document = client.simulate_get("/openapi.json").json
    samples: list[Any] = [*answers["seed"].values(), *answers["v1"].values(), None, {}, [], "x", 1,
                          {"_id": "x"} | answers["seed"]["queued"]]  # a result with every stats key
    samples += [answer["broker"] for answer in answers["v1"].values()]
    branch_sets = list(one_ofs(document))
    assert branch_sets
    for branches in branch_sets:
        checks = [validator(document, branch) for branch in branches]
        for sample in samples:
            matching = [n for n, check in enumerate(checks) if check.is_valid(sample)]
            assert len(matching) <= 1, (branches, sample)
