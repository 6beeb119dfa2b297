"""The OpenAPI document says exactly what the app serves."""
from __future__ import annotations

import falcon.inspect
import falcon.testing

from jobkit import App
from jobkit.api import create_app
from jobkit.config import Settings

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def served(web: falcon.App) -> set[tuple[str, str]]:
    """(path, method) of every responder the app defines itself (not Falcon's 405/OPTIONS)."""
    return {(route.path, method.method.lower())
            for route in falcon.inspect.inspect_routes(web)
            for method in route.methods if not method.internal}


def documented(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(path, method) for path, item in paths.items() for method in item if method in HTTP_METHODS}


def test_document_covers_every_route_and_method_and_no_other(client: falcon.testing.TestClient) -> None:
    document = client.simulate_get("/openapi.json").json
    assert documented(document) == served(client.app)


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
