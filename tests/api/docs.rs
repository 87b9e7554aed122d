//! The OpenAPI document as a product: what the gate answers is documented on every gated
//! operation, the examples are accepted by the server, and Swagger UI is served from the binary.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((path.clone(), method.to_owned(), op.clone()));
            }
        }
    }
    out
}

fn schema_ref(response: &Value) -> &str {
    response["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn every_gated_operation_documents_what_the_gate_answers() {
    let doc: Value = serde_json::from_str(&audience_server::openapi::document_json()).unwrap();
    let ops = operations(&doc);
    assert!(ops.len() >= 8, "{} operations", ops.len());
    let mut ids = std::collections::HashSet::new();
    for (path, method, op) in ops {
        let name = format!("{method} {path}");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(
            ids.insert(id.to_owned()),
            "{name}: operationId {id} repeated"
        );
        assert!(op["summary"].is_string(), "{name}: summary");
        assert!(op["description"].is_string(), "{name}: description");
        assert_eq!(
            op["tags"].as_array().map(Vec::len),
            Some(1),
            "{name}: one tag"
        );
        let responses = op["responses"].as_object().unwrap();
        for (status, response) in responses {
            assert!(
                response["headers"]["x-request-id"].is_object(),
                "{name} {status}: x-request-id header"
            );
        }
        // The API and the test control (/_local) pass the gate; the rest needs no credentials.
        if !path.starts_with("/data/") && !path.starts_with("/_local/") {
            assert_eq!(
                op["security"],
                serde_json::json!([]),
                "{name}: no credentials"
            );
            continue;
        }
        assert_eq!(
            schema_ref(&responses["400"]),
            "#/components/schemas/BadRequestBody",
            "{name}"
        );
        for status in ["401", "403"] {
            assert_eq!(
                schema_ref(&responses[status]),
                "#/components/schemas/GatewayError",
                "{name} {status}"
            );
        }
        assert_eq!(
            schema_ref(&responses["503"]),
            "#/components/schemas/ErrorBody",
            "{name}"
        );
        if op.get("requestBody").is_some() {
            for status in ["413", "415"] {
                assert_eq!(
                    schema_ref(&responses[status]),
                    "#/components/schemas/ErrorBody",
                    "{name} {status}"
                );
            }
        }
    }
}

/// The request examples of the document are accepted as they stand, and the server's answer has
/// every field the response example shows.
#[tokio::test]
async fn documented_create_examples_are_accepted() {
    let app = TestApp::spawn().await;
    let doc: Value = serde_json::from_str(&audience_server::openapi::document_json()).unwrap();
    let op = &doc["paths"]["/data/core/ups/audiences"]["post"];
    let requests = op["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap();
    let answers = &op["responses"]["200"]["content"]["application/json"]["examples"];
    assert_eq!(requests.len(), 2);
    for (name, example) in requests {
        let res = app.create_audience(&example["value"]).await;
        assert_eq!(res.status(), 200, "{name}");
        let created: Value = res.json().await.unwrap();
        let shown = answers[name]["value"]
            .as_object()
            .expect("a response example");
        for key in shown.keys() {
            assert!(created.get(key).is_some(), "{name}: answer lacks {key}");
        }
    }
    let bulk = &doc["paths"]["/data/core/ups/audiences/bulk-get"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(bulk, "#/components/schemas/BulkGetRequest");
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/docs/");
    let res = app
        .client
        .request(Method::GET, format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN: {page}"
    );
    let init = app
        .client
        .get(format!("{}/docs/swagger-initializer.js", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"url\": \"/openapi.json\""), "{init}");
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        let res = app
            .client
            .get(format!("{}/docs/{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }
    let res = app
        .client
        .get(format!("{}/docs/missing.js", app.address))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "UPAPI-113404-404").await;
}

/// The server tells a wrong method from a wrong path by the paths it registers, which are the
/// document's: every documented path answers 405 to each method it does not document, and a
/// path below it that nothing serves answers 404.
#[tokio::test]
async fn undocumented_methods_are_405_and_undocumented_paths_404() {
    let app = TestApp::spawn().await;
    let doc: Value = serde_json::from_str(&audience_server::openapi::document_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut refused = 0;
    for (template, item) in paths {
        // Every parameter gets an id that exists nowhere: the route, not the resource, answers.
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            // `GET /audiences/bulk-get` is a read of the audience whose id is "bulk-get".
            let served = paths
                .iter()
                .any(|(other, item)| matches(other, &path) && item.get(method).is_some());
            if served {
                continue;
            }
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app.request(verb.clone(), &path).send().await.unwrap();
            let message = assert_error(res, 405, "UPAPI-113405-405").await;
            assert_eq!(message, format!("Method {verb} is not allowed on {path}."));
            refused += 1;
        }
        assert!(item
            .as_object()
            .unwrap()
            .keys()
            .any(|m| METHODS.contains(&m.as_str())));
        let below = format!("{path}/no/route");
        let res = app.request(Method::GET, &below).send().await.unwrap();
        let message = assert_error(res, 404, "UPAPI-113404-404").await;
        assert_eq!(message, format!("No resource at {below}."));
    }
    assert!(paths.len() >= 15, "{} paths", paths.len());
    assert!(refused >= 45, "{refused} methods refused");
    for path in [
        "/data/core/ups/segments",
        "/data/core/ais/nothing",
        "/nowhere",
    ] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        assert_error(res, 404, "UPAPI-113404-404").await;
    }
}

/// Whether a path template of the document matches a path, `{..}` standing for one segment.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}
