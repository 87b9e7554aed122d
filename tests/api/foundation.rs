//! Every-request rules: headers in order, error shapes, request ids, tenants, aliases, health, the
//! OpenAPI document.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn gateway_error(res: reqwest::Response, status: u16, code: &str, message: &str) {
    assert_eq!(res.status().as_u16(), status);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"error_code": code, "message": message}));
}

#[tokio::test]
async fn header_checks_run_in_order_with_exact_bodies() {
    let app = TestApp::spawn().await;
    let url = format!("{}/data/core/ups/audiences", app.address);
    let c = &app.client;

    // Nothing at all: the token is checked first.
    gateway_error(
        c.get(&url).send().await.unwrap(),
        401,
        "403010",
        "Oauth token is missing.",
    )
    .await;
    // A token that is not a bearer token, or is empty.
    for auth in ["Basic abc", "Bearer ", "Bearer"] {
        let res = c
            .get(&url)
            .header("Authorization", auth)
            .header("x-api-key", "k")
            .send()
            .await
            .unwrap();
        gateway_error(res, 401, "401013", "Oauth token is not valid").await;
    }
    // Token fine, no api key (the org is missing too: the key is reported first).
    let res = c
        .get(&url)
        .header("Authorization", "Bearer t")
        .send()
        .await
        .unwrap();
    gateway_error(res, 403, "403000", "Api Key is required").await;
    let res = c
        .get(&url)
        .header("Authorization", "Bearer t")
        .header("x-api-key", " ")
        .send()
        .await
        .unwrap();
    gateway_error(res, 403, "403000", "Api Key is required").await;
    // Then the org.
    let res = c
        .get(&url)
        .header("Authorization", "Bearer t")
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    gateway_error(res, 400, "400003", "Missing header").await;
    // Then the sandbox: missing, upper case, too long, bad characters.
    let base = || {
        c.get(&url)
            .header("Authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
    };
    let msg = assert_error(base().send().await.unwrap(), 400, "UPAPI-113400-400").await;
    assert!(msg.contains("x-sandbox-name"), "{msg}");
    for bad in ["Prod", "a_b", &"a".repeat(65), "dev sandbox"] {
        let msg = assert_error(
            base().header("x-sandbox-name", bad).send().await.unwrap(),
            400,
            "UPAPI-113400-400",
        )
        .await;
        assert!(msg.contains("x-sandbox-name"), "{bad}: {msg}");
    }
    // All present: the request goes through.
    let res = base()
        .header("x-sandbox-name", "dev-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn content_type_is_checked_only_on_bodies() {
    let app = TestApp::spawn().await;
    let res = app
        .ups(Method::POST, "/audiences")
        .header("Content-Type", "text/plain")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    let msg = assert_error(res, 415, "UPAPI-113415-415").await;
    assert!(msg.contains("Content-Type"));
    // curl -d without a header sends the form type: read as JSON, as Adobe's tutorial relies on.
    let res = app
        .ups(Method::POST, "/audiences")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(r#"{"name":"from curl"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A bodiless GET or DELETE carrying the header is never refused for it.
    let res = app
        .ups(Method::GET, "/audiences")
        .header("Content-Type", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let created = app.created(platform_audience()).await;
    let id = created["id"].as_str().unwrap();
    let res = app
        .ups(Method::DELETE, &format!("/audiences/{id}"))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = TestApp::spawn().await;
    let res = app.list("").await;
    let made = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 32);
    assert!(made.chars().all(|c| c.is_ascii_alphanumeric()));
    let res = app
        .ups(Method::GET, "/audiences/nope")
        .header("x-request-id", "my-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-trace-1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["requestId"], "my-trace-1");
    // Also on responses outside the API.
    let res = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn malformed_bodies_unknown_paths_and_wrong_methods_answer_json() {
    let app = TestApp::spawn().await;
    let res = app
        .ups(Method::POST, "/audiences")
        .header("Content-Type", "application/json")
        .body(r#"{"name": "x", "description" "missing colon"}"#)
        .send()
        .await
        .unwrap();
    let msg = assert_error(res, 400, "UPLIB-101206-500").await;
    assert!(msg.contains("not valid JSON"), "{msg}");
    let res = app
        .ups(Method::POST, "/audiences")
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    let msg = assert_error(res, 400, "UPLIB-101206-500").await;
    assert!(msg.contains("required"), "{msg}");
    let res = app
        .create_audience(&json!({"name": ["not", "a", "string"]}))
        .await;
    let msg = assert_error(res, 400, "UPLIB-101206-500").await;
    assert!(msg.contains("'name'"), "{msg}");

    assert_error(
        app.ups(Method::GET, "/nothing-here").send().await.unwrap(),
        404,
        "UPAPI-113404-404",
    )
    .await;
    assert_error(
        app.client
            .get(format!("{}/no/such/path", app.address))
            .send()
            .await
            .unwrap(),
        404,
        "UPAPI-113404-404",
    )
    .await;
    let msg = assert_error(
        app.ups(Method::PUT, "/audiences").send().await.unwrap(),
        405,
        "UPAPI-113405-405",
    )
    .await;
    assert!(msg.contains("PUT"));
    assert_error(
        app.ups(Method::POST, "/audiences/abc")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        405,
        "UPAPI-113405-405",
    )
    .await;
    // Oversized bodies are refused in the same shape.
    let huge = json!({"name": "x", "description": "y".repeat(3 * 1024 * 1024)});
    let res = app.create_audience(&huge).await;
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], 413);
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let app = TestApp::spawn().await;
    let created = app.created(platform_audience()).await;
    let id = created["id"].as_str().unwrap();
    for (org, sandbox) in [("OTHER@AdobeOrg", "prod"), (ORG, "dev")] {
        let other = app.as_tenant(org, sandbox);
        let res = other
            .ups(Method::GET, &format!("/audiences/{id}"))
            .send()
            .await
            .unwrap();
        let msg = assert_error(res, 404, "UPAPI-113430-404").await;
        assert!(!msg.contains("People"), "no field leaks");
        for method in [Method::PUT, Method::PATCH, Method::DELETE] {
            let body = if method == Method::PATCH {
                json!([])
            } else {
                json!({"name": "stolen"})
            };
            let res = other
                .ups(method, &format!("/audiences/{id}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404);
        }
        let list: Value = other
            .ups(Method::GET, "/audiences")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["_page"]["totalCount"], 0);
        let res = other
            .ups(Method::POST, "/audiences/bulk-get")
            .json(&json!({"ids": [id]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    // The owner still has it, unchanged.
    let res = app.get_audience(id).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], created["name"]);
}

#[tokio::test]
async fn sandboxes_are_registered_once_with_a_stable_id() {
    let app = TestApp::spawn().await;
    let a = app.created(json!({"name": "a"})).await;
    let b = app.created(json!({"name": "b"})).await;
    assert_eq!(a["sandbox"]["sandboxName"], "prod");
    assert_eq!(a["sandbox"]["type"], "production");
    assert_eq!(a["sandbox"]["default"], true);
    assert_eq!(a["sandbox"]["sandboxId"], b["sandbox"]["sandboxId"]);
    assert_eq!(a["imsOrgId"], ORG);
    let dev = app.as_tenant(ORG, "dev-team");
    let d: Value = dev
        .ups(Method::POST, "/audiences")
        .json(&json!({"name": "d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["sandbox"]["type"], "development");
    assert_eq!(d["sandbox"]["default"], false);
    assert_ne!(d["sandbox"]["sandboxId"], a["sandbox"]["sandboxId"]);
    // A second server process on the same database sees the same sandbox id.
    let second = TestApp::spawn_on(app.database_url.clone(), |_| {}).await;
    let c = second.created(json!({"name": "c"})).await;
    assert_eq!(c["sandbox"]["sandboxId"], a["sandbox"]["sandboxId"]);
}

#[tokio::test]
async fn created_by_comes_from_the_token() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let app = TestApp::spawn().await;
    let jwt = |claims: Value| {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let create = |token: String| {
        app.request_with_token(Method::POST, "/data/core/ups/audiences", &token)
            .json(&json!({"name": "n"}))
            .send()
    };
    let a: Value = create(jwt(json!({"user_id": "alice@AdobeID", "sub": "x"})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["createdBy"], "alice@AdobeID");
    let b: Value = create(jwt(json!({"sub": "bob@AdobeID"})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["createdBy"], "bob@AdobeID");
    let c1: Value = create("opaque-token".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c2: Value = create("opaque-token".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c1["createdBy"], c2["createdBy"]);
    assert_ne!(c1["createdBy"], a["createdBy"]);
    // An update records who made it.
    let id = a["id"].as_str().unwrap();
    let res = app
        .request_with_token(
            Method::PATCH,
            &format!("/data/core/ups/audiences/{id}"),
            &jwt(json!({"sub": "carol@AdobeID"})),
        )
        .json(&json!([{"op": "add", "path": "/description", "value": "d"}]))
        .send()
        .await
        .unwrap();
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["lastModifiedBy"], "carol@AdobeID");
    assert_eq!(patched["createdBy"], "alice@AdobeID");
}

/// A secret of the length `verify` mode requires (32 bytes or more).
const STAGING_SECRET: &str = "staging-secret-of-at-least-32-bytes";

#[tokio::test]
async fn verify_mode_binds_tokens_to_orgs() {
    use audience_server::config::{AuthMode, Secret};
    let app = TestApp::spawn_with(|s| {
        s.auth_mode = AuthMode::Verify;
        s.jwt_secret = Some(Secret(STAGING_SECRET.into()));
    })
    .await;
    let token = |org: &str, secret: &str| {
        let claims =
            json!({"sub": "svc@AdobeID", "org": org, "exp": chrono::Utc::now().timestamp() + 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let call = |t: String| {
        app.request_with_token(Method::GET, "/data/core/ups/audiences", &t)
            .send()
    };
    assert_eq!(
        call(token(ORG, STAGING_SECRET)).await.unwrap().status(),
        200
    );
    gateway_error(
        call(token("OTHER@AdobeOrg", STAGING_SECRET)).await.unwrap(),
        403,
        "403025",
        "Profile is not valid",
    )
    .await;
    gateway_error(
        call(token(ORG, "wrong")).await.unwrap(),
        401,
        "401013",
        "Oauth token is not valid",
    )
    .await;
    gateway_error(
        call("opaque".into()).await.unwrap(),
        401,
        "401013",
        "Oauth token is not valid",
    )
    .await;
}

#[tokio::test]
async fn routes_answer_without_data_prefix_and_with_trailing_slash() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::POST, "/core/ups/audiences/")
        .json(&json!({"name": "alias"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    for path in [
        format!("/core/ups/audiences/{id}"),
        format!("/data/core/ups/audiences/{id}/"),
        format!("/core/ups/audiences/{id}/"),
    ] {
        let res = app.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = app
        .request(Method::GET, "/core/ups/audiences/?limit=1")
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["_page"]["limit"], 1);
}

#[tokio::test]
async fn health_reports_the_database() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "ok", "database": "up"})
    );

    // A server whose database is gone answers 503.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let down = audience_server::startup::Application::with_pool(
        audience_server::config::Settings::for_database("postgres://unused"),
        pool,
        None,
    )
    .unwrap();
    let address = format!("http://127.0.0.1:{}", down.port());
    let handle = down.handle();
    tokio::spawn(down.run_until_stopped());
    let res = app
        .client
        .get(format!("{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "unavailable", "database": "down"})
    );
    // API calls on a dead database are 503 in the service's shape, not a hang or a 500.
    let res = app
        .client
        .get(format!("{address}/data/core/ups/audiences"))
        .header("Authorization", "Bearer t")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", "prod")
        .send()
        .await
        .unwrap();
    assert_error(res, 503, "UPAPI-113503-503").await;
    handle.stop(false).await;
}

#[tokio::test]
async fn openapi_document_is_served_and_committed() {
    let app = TestApp::spawn().await;
    let served: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = audience_server::openapi::document_json();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `cargo run -- openapi --out openapi/openapi.json`"
    );
    assert_eq!(served, serde_json::from_str::<Value>(&generated).unwrap());
    for path in [
        "/data/core/ups/audiences",
        "/data/core/ups/audiences/{id}",
        "/data/core/ups/audiences/bulk-get",
    ] {
        assert!(served["paths"][path].is_object(), "{path} documented");
    }
}
