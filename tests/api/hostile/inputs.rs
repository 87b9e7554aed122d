//! Attacks through request inputs: lengths, counts, depth, what a JSON Patch can grow into, the
//! tenant headers, tokens, list pages, sandboxes, and a database that does not answer in time.
//! Each is refused with a 4xx that names the bound (or, for the database, a 503 with
//! `Retry-After`), stores nothing, and leaves the server serving.

use std::time::Duration;

use audience_server::{
    config::{AuthMode, DbTimeouts, Secret, Settings},
    startup::Application,
    storage,
};
use rand::{distr::Alphanumeric, Rng};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const LIMIT: &str = "UPAPI-113414-400";
const BAD_HEADER: &str = "UPAPI-113400-400";
const AIS_INVALID: &str = "100910-400";

fn random_text(chars: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(chars)
        .map(char::from)
        .collect()
}

/// The audience as stored, to show that a refused write changed nothing.
async fn stored(app: &TestApp, id: &str) -> Value {
    let res = app.get_audience(id).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_patch_that_copies_a_value_into_itself_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap();
    // The issue's attack: 22 copies stored a 16 MB audience and took the server to 1.4 GB.
    let mut ops = vec![json!({"op": "add", "path": "/x", "value": [1]})];
    ops.extend((0..22).map(|_| json!({"op": "copy", "from": "/x", "path": "/x/-"})));
    let message = assert_error(app.patch_audience(id, &json!(ops)).await, 400, LIMIT).await;
    assert_eq!(
        message,
        "JSON Patch operation 1: a 'copy' from '/x' into '/x/-', inside the value it takes, is not allowed."
    );
    assert_eq!(stored(&app, id).await, audience);
}

#[tokio::test]
async fn a_patch_that_doubles_through_two_names_stops_at_the_size_bound() {
    let app = TestApp::spawn().await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap();
    // The patch works on the audience as a client reads it; no operation may take it past its
    // size before the patch plus MAX_AUDIENCE_BYTES (256 KiB).
    let bound = serde_json::to_string(&audience).unwrap().len() + 256 * 1024;
    // x = [40 KiB]; then y := x and x += [y], which doubles x every two operations: the
    // operation that would take the document past the bound is refused before it runs.
    let mut ops = vec![json!({"op": "add", "path": "/x", "value": ["s".repeat(40 * 1024)]})];
    for _ in 0..10 {
        ops.push(json!({"op": "copy", "from": "/x", "path": "/y"}));
        ops.push(json!({"op": "copy", "from": "/y", "path": "/x/-"}));
    }
    let message = assert_error(app.patch_audience(id, &json!(ops)).await, 400, LIMIT).await;
    // x doubles at operations 2 and 4 (160 KiB); y := x at 5 makes 320 KiB, past the bound.
    let suffix = format!(
        " bytes of JSON; at most {bound} are allowed (its size before the patch plus MAX_AUDIENCE_BYTES, and at most MAX_BODY_BYTES)."
    );
    let size: usize = message
        .strip_prefix("JSON Patch operation 5 would make the audience at least ")
        .and_then(|m| m.strip_suffix(suffix.as_str()))
        .unwrap_or_else(|| panic!("{message}"))
        .parse()
        .unwrap();
    assert!(size > bound, "{size}");
    assert_eq!(stored(&app, id).await, audience);
}

#[tokio::test]
async fn too_many_patch_operations_are_refused() {
    let app = TestApp::spawn().await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap();
    let ops: Vec<Value> = (0..101)
        .map(|i| json!({"op": "add", "path": "/description", "value": format!("d{i}")}))
        .collect();
    let message = assert_error(app.patch_audience(id, &json!(ops)).await, 400, LIMIT).await;
    assert_eq!(
        message,
        "The JSON Patch holds 101 operations; at most 100 are allowed."
    );
    assert_eq!(stored(&app, id).await, audience);
    // 100 pass.
    let res = app.patch_audience(id, &json!(ops[..100])).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn long_indexed_strings_answer_400_naming_the_field_and_the_limit() {
    let app = TestApp::spawn().await;
    // Each of these answered 500 (B-tree index row size) before.
    for (body, message) in [
        (
            json!({"name": random_text(20_000)}),
            "Field 'name' is 20000 characters long; at most 256 are allowed.",
        ),
        (
            json!({"name": "n", "namespace": random_text(9_000)}),
            "Field 'namespace' is 9000 characters long; at most 256 are allowed.",
        ),
        (
            json!({"name": "n", "audienceId": random_text(3_000)}),
            "Field 'audienceId' is 3000 characters long; at most 256 are allowed.",
        ),
        (
            json!({"name": "n", "description": random_text(5_000)}),
            "Field 'description' is 5000 characters long; at most 4096 are allowed.",
        ),
        (
            json!({"name": "n", "labels": [random_text(300)]}),
            "Field 'labels[0]' is 300 characters long; at most 256 are allowed.",
        ),
    ] {
        let got = assert_error(app.create_audience(&body).await, 400, LIMIT).await;
        assert_eq!(got, message);
    }
    // The same on PUT, and nothing is stored.
    let audience = app.created(json!({"name": "n"})).await;
    let id = audience["id"].as_str().unwrap();
    let got = assert_error(
        app.put_audience(id, &json!({"name": random_text(20_000)}))
            .await,
        400,
        LIMIT,
    )
    .await;
    assert_eq!(
        got,
        "Field 'name' is 20000 characters long; at most 256 are allowed."
    );
    assert_eq!(stored(&app, id).await, audience);
    let list: Value = app.list("").await.json().await.unwrap();
    assert_eq!(list["_page"]["totalCount"], 1);
}

#[tokio::test]
async fn long_ais_strings_answer_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let body = json!({
        "name": random_text(20_000),
        "fields": [{"name": "id", "type": "string", "identityNs": "email"}],
        "sourceSpec": {"params": {"path": "a/b.csv", "type": "file"}},
        "originName": "CUSTOM_UPLOAD"
    });
    let res = app
        .request(Method::POST, "/data/core/ais/external-audience/")
        .json(&body)
        .send()
        .await
        .unwrap();
    let got = assert_error(res, 400, AIS_INVALID).await;
    assert_eq!(
        got,
        "Field 'name' is 20000 characters long; at most 256 are allowed."
    );
    // The meta-only create goes through the UPS rules and answers in AIS's codes.
    let res = app
        .request(
            Method::POST,
            "/data/core/ais/audiences?createAudienceMetaOnly=true",
        )
        .header(
            "Accept",
            "application/vnd.adobe.external.audiences+json; version=2",
        )
        .json(&json!({"name": "m", "namespace": random_text(9_000), "originName": "CUSTOM_UPLOAD"}))
        .send()
        .await
        .unwrap();
    let got = assert_error(res, 400, AIS_INVALID).await;
    assert_eq!(
        got,
        "Field 'namespace' is 9000 characters long; at most 256 are allowed."
    );
}

#[tokio::test]
async fn tenant_headers_are_bounded_and_simple_org_ids_still_work() {
    let app = TestApp::spawn().await;
    let with = |org: &str, key: &str, token: &str| {
        app.client
            .get(format!("{}/data/core/ups/audiences", app.address))
            .header("Authorization", format!("Bearer {token}"))
            .header("x-api-key", key)
            .header("x-gw-ims-org-id", org)
            .header("x-sandbox-name", "prod")
            .send()
    };
    let long_org = random_text(8_000);
    for ((org, key, token), message) in [
        (
            (long_org.as_str(), "k", "t"),
            "Header 'x-gw-ims-org-id' is 8000 characters long; at most 64 are allowed.",
        ),
        (
            ("my org@AdobeOrg", "k", "t"),
            "Header 'x-gw-ims-org-id' must hold only letters, digits, '@', '.', '_' and '-', such as 1BD6382559DF0C130A49422D@AdobeOrg.",
        ),
        (
            (ORG, &"k".repeat(257), "t"),
            "Header 'x-api-key' is 257 characters long; at most 256 are allowed.",
        ),
        (
            (ORG, "k", &"t".repeat(8_193)),
            "Header 'Authorization' is 8193 characters long; at most 8192 are allowed.",
        ),
    ] {
        let got = assert_error(with(org, key, token).await.unwrap(), 400, BAD_HEADER).await;
        assert_eq!(got, message);
    }
    for org in ["test-org@AdobeOrg", ORG, "my.org_1"] {
        assert_eq!(with(org, "k", "t").await.unwrap().status(), 200, "{org}");
    }
    // The token's user becomes `createdBy`: it is bounded like an identifier.
    let long_user = signed(json!({"sub": "u".repeat(300)}));
    let got = assert_error(with(ORG, "k", &long_user).await.unwrap(), 400, BAD_HEADER).await;
    assert_eq!(
        got,
        "Header 'Authorization': the token's user ('user_id' or 'sub' claim) is 300 characters long; at most 256 are allowed."
    );
}

/// `inSegment('<n>')` for n in 0..count, with nothing between: about 18 characters each.
fn references(count: usize) -> String {
    (0..count).map(|i| format!("inSegment('{i}')")).collect()
}

fn with_expression(value: String) -> Value {
    json!({"name": "n", "expression": {"type": "PQL", "format": "pql/text", "value": value}})
}

#[tokio::test]
async fn an_expression_of_100k_references_is_refused_by_its_length() {
    let app = TestApp::spawn().await;
    let value = references(100_000);
    let chars = value.len();
    let got = assert_error(
        app.create_audience(&with_expression(value)).await,
        400,
        LIMIT,
    )
    .await;
    assert_eq!(
        got,
        format!("Field 'expression.value' is {chars} characters long; at most 65536 are allowed.")
    );
}

#[tokio::test]
async fn an_expression_of_100k_references_is_refused_by_their_number() {
    // With the length bound lifted, the references are counted (in one pass) and refused.
    let app = TestApp::spawn_with(|s| s.limits.max_expression_chars = 2_000_000).await;
    let got = assert_error(
        app.create_audience(&with_expression(references(100_000)))
            .await,
        400,
        LIMIT,
    )
    .await;
    assert_eq!(
        got,
        "Field 'expression.value' references more than 100 distinct audiences with inSegment(...); at most 100 are allowed."
    );
    // The same through PATCH.
    let audience = app.created(json!({"name": "p"})).await;
    let id = audience["id"].as_str().unwrap();
    let ops = json!([{"op": "add", "path": "/expression",
                       "value": {"type": "PQL", "format": "pql/text", "value": references(101)}}]);
    let got = assert_error(app.patch_audience(id, &ops).await, 400, LIMIT).await;
    assert!(got.contains("more than 100 distinct audiences"), "{got}");
    assert_eq!(stored(&app, id).await, audience);
}

/// `{"name": "n", "x": [[...[]...]]}`: the object and `levels - 1` arrays.
fn nested_body(levels: usize) -> String {
    format!(
        r#"{{"name": "n", "x": {}{}}}"#,
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

#[tokio::test]
async fn deep_bodies_are_refused_naming_the_depth_limit() {
    let app = TestApp::spawn().await;
    let post = |path: &str, body: String| {
        app.request(Method::POST, path)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    // 33 levels, and 1,000 (past what the JSON parser itself accepts).
    for levels in [33, 1_000] {
        let res = post("/data/core/ups/audiences", nested_body(levels))
            .await
            .unwrap();
        let got = assert_error(res, 400, LIMIT).await;
        assert_eq!(
            got,
            format!(
                "The request body nests arrays and objects {levels} levels deep; at most 32 are allowed."
            )
        );
    }
    let res = post("/data/core/ais/external-audience", nested_body(40))
        .await
        .unwrap();
    let got = assert_error(res, 400, AIS_INVALID).await;
    assert_eq!(
        got,
        "The request body nests arrays and objects 40 levels deep; at most 32 are allowed."
    );
    // 32 levels are accepted.
    let res = post("/data/core/ups/audiences", nested_body(32))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn labels_and_bulk_get_ids_are_bounded() {
    let app = TestApp::spawn().await;
    let labels: Vec<String> = (0..101).map(|i| format!("core/C{i}")).collect();
    let got = assert_error(
        app.create_audience(&json!({"name": "n", "labels": labels}))
            .await,
        400,
        LIMIT,
    )
    .await;
    assert_eq!(
        got,
        "Field 'labels' holds 101 entries; at most 100 are allowed."
    );
    // A bulk-get id is echoed in the answer: each is bounded like any id.
    let res = app
        .ups(Method::POST, "/audiences/bulk-get")
        .json(&json!({"ids": [{"id": "x".repeat(257)}]}))
        .send()
        .await
        .unwrap();
    let got = assert_error(res, 400, LIMIT).await;
    assert_eq!(
        got,
        "Field 'ids[0]' is 257 characters long; at most 256 are allowed."
    );
}

#[tokio::test]
async fn one_audience_is_bounded_in_size() {
    let app = TestApp::spawn().await;
    // Unknown fields are kept: 300 KiB of them is past the 256 KiB an audience may hold.
    let body = json!({"name": "n", "custom": "c".repeat(300 * 1024)});
    let got = assert_error(app.create_audience(&body).await, 400, LIMIT).await;
    let bytes: usize = got
        .strip_prefix("The audience is ")
        .and_then(|m| m.strip_suffix(" bytes of JSON; at most 262144 are allowed."))
        .unwrap_or_else(|| panic!("{got}"))
        .parse()
        .unwrap();
    assert!(bytes > 300 * 1024);
}

#[tokio::test]
async fn a_list_page_ends_at_its_byte_budget_and_next_visits_every_audience_once() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_audience_bytes = 4 * 1024;
        s.limits.max_list_page_bytes = 8 * 1024;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let a = app
            .created(json!({"name": format!("a{i}"), "description": "d".repeat(2000)}))
            .await;
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut query = "limit=1000&sort=name:asc".to_owned();
    loop {
        let page: Value = app.list(&query).await.json().await.unwrap();
        let children = page["children"].as_array().unwrap();
        let size = page["_page"]["pageSize"].as_u64().unwrap() as usize;
        assert_eq!(children.len(), size);
        assert!((1..10).contains(&size), "{}", page["_page"]);
        assert_eq!(page["_page"]["limit"], 1000);
        let bytes: usize = children
            .iter()
            .map(|c| serde_json::to_string(c).unwrap().len() + 1)
            .sum();
        assert!(bytes <= 8 * 1024, "{bytes}");
        seen.extend(
            children
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        let Some(next) = page["_page"]["next"].as_u64() else {
            assert!(page["_links"].get("next").is_none());
            break;
        };
        assert_eq!(next as usize, seen.len());
        let href = page["_links"]["next"]["href"].as_str().unwrap();
        assert!(
            href.starts_with(&format!("@/audiences?start={next}&limit=1000")),
            "{href}"
        );
        query = href.trim_start_matches("@/audiences?").to_owned();
    }
    ids.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "every audience once");
}

#[tokio::test]
async fn a_bulk_get_past_the_page_budget_is_refused() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_audience_bytes = 4 * 1024;
        s.limits.max_list_page_bytes = 8 * 1024;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let a = app
            .created(json!({"name": format!("a{i}"), "description": "d".repeat(2000)}))
            .await;
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    let bulk = |ids: &[String]| {
        app.ups(Method::POST, "/audiences/bulk-get")
            .json(&json!({ "ids": ids }))
            .send()
    };
    let got = assert_error(bulk(&ids).await.unwrap(), 400, LIMIT).await;
    let bytes: usize = got
        .strip_prefix("Field 'ids': the audiences asked for are ")
        .and_then(|m| {
            m.strip_suffix(
                " bytes of JSON; at most 8192 are sent at once. Ask for fewer ids per call.",
            )
        })
        .unwrap_or_else(|| panic!("{got}"))
        .parse()
        .unwrap();
    assert!(bytes > 8 * 1024);
    let res = bulk(&ids[..2]).await.unwrap();
    assert_eq!(res.status(), 207);
}

#[tokio::test]
async fn an_organisation_gets_at_most_100_sandboxes() {
    let app = TestApp::spawn().await;
    let get = |org: &str, sandbox: &str| {
        app.as_tenant(org, sandbox)
            .ups(Method::GET, "/audiences")
            .send()
    };
    for i in 0..100 {
        let name = if i == 0 {
            "prod".to_owned()
        } else {
            format!("dev-{i}")
        };
        assert_eq!(get(ORG, &name).await.unwrap().status(), 200, "{name}");
    }
    let got = assert_error(get(ORG, "dev-100").await.unwrap(), 400, LIMIT).await;
    assert_eq!(
        got,
        "Header 'x-sandbox-name': the organisation already uses 100 sandboxes, the most this server allows; use one of them."
    );
    // Known sandboxes still answer, and another organisation has its own 100.
    assert_eq!(get(ORG, "dev-99").await.unwrap().status(), 200);
    assert_eq!(
        get("OTHER@AdobeOrg", "dev-100").await.unwrap().status(),
        200
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sandboxes WHERE org_id = $1")
        .bind(ORG)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 100);
}

/// In the open auth mode any caller names any organisation: the server registers at most
/// `MAX_ORGANISATIONS`, and concurrent first uses of new ones cannot pass the cap together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_registers_at_most_max_organisations() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_organisations = 5;
        s.db_pool_size = 8;
        s.http_workers = Some(2);
    })
    .await;
    let get = |org: String, sandbox: &str| {
        app.as_tenant(&org, sandbox)
            .ups(Method::GET, "/audiences")
            .send()
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(12));
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let request = get(format!("ORG{i}@AdobeOrg"), "prod");
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for (i, request) in requests.into_iter().enumerate() {
        match request.await.unwrap() {
            200 => admitted.push(format!("ORG{i}@AdobeOrg")),
            400 => {}
            other => panic!("ORG{i}: {other}"),
        }
    }
    assert_eq!(admitted.len(), 5, "{admitted:?}");
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT org_id FROM organisations ORDER BY org_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    stored.sort();
    admitted.sort();
    assert_eq!(stored, admitted);

    let got = assert_error(
        get("NEW@AdobeOrg".into(), "prod").await.unwrap(),
        400,
        LIMIT,
    )
    .await;
    assert_eq!(
        got,
        "Header 'x-gw-ims-org-id': the server already serves 5 organisations, the most it allows; use a known one."
    );
    // A known organisation keeps working, and may still register new sandboxes.
    assert_eq!(
        get(admitted[0].clone(), "prod").await.unwrap().status(),
        200
    );
    assert_eq!(get(admitted[0].clone(), "dev").await.unwrap().status(), 200);
}

/// Thirty first uses of new sandbox names leave at once (a barrier) for a server with two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_cap_holds_under_concurrent_first_uses() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_sandboxes_per_org = 10;
        s.db_pool_size = 8;
        s.http_workers = Some(2);
    })
    .await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(30));
    let requests: Vec<_> = (0..30)
        .map(|i| {
            let request = app
                .as_tenant("RACE@AdobeOrg", &format!("s-{i}"))
                .ups(Method::GET, "/audiences");
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        20,
        "{statuses:?}"
    );
    // The sandboxes stored are exactly the ones whose first use was answered.
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sandboxes WHERE org_id = $1 ORDER BY name")
            .bind("RACE@AdobeOrg")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut admitted: Vec<String> = (0..30)
        .filter(|i| statuses[*i] == 200)
        .map(|i| format!("s-{i}"))
        .collect();
    stored.sort();
    admitted.sort();
    assert_eq!(stored, admitted);
}

const SECRET: &str = "hostile-tests-secret-of-32-bytes-or-more";

fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn assert_token_invalid(res: Response) {
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error_code": "401013", "message": "Oauth token is not valid"})
    );
}

#[tokio::test]
async fn verify_mode_checks_not_before_issuer_and_audience() {
    let app = TestApp::spawn_with(|s| {
        s.auth_mode = AuthMode::Verify;
        s.jwt_secret = Some(Secret(SECRET.into()));
        s.jwt_issuer = Some("https://ims.example".into());
        s.jwt_audience = Some("audience-server".into());
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let token = |extra: Value| {
        let mut claims = json!({"sub": "svc@AdobeID", "org": ORG, "exp": now + 600,
                                "iss": "https://ims.example", "aud": "audience-server"});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        signed(claims)
    };
    let call = |t: String| {
        app.request_with_token(Method::GET, "/data/core/ups/audiences", &t)
            .send()
    };
    assert_eq!(call(token(json!({}))).await.unwrap().status(), 200);
    assert_eq!(
        call(token(json!({"nbf": now - 60})))
            .await
            .unwrap()
            .status(),
        200
    );
    for bad in [
        json!({"nbf": now + 3600}),
        json!({"iss": "https://elsewhere.example"}),
        json!({"aud": "another-service"}),
    ] {
        assert_token_invalid(call(token(bad)).await.unwrap()).await;
    }
}

/// `verify` mode accepts only what it documents: an HS256 token signed with the secret and
/// carrying `exp`. The same claims without `exp`, signed with another algorithm (even with the
/// same secret), or unsigned (`alg: none`) are refused like any bad token.
#[tokio::test]
async fn verify_mode_refuses_tokens_without_expiry_or_of_another_algorithm() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let app = TestApp::spawn_with(|s| {
        s.auth_mode = AuthMode::Verify;
        s.jwt_secret = Some(Secret(SECRET.into()));
    })
    .await;
    let claims =
        json!({"sub": "svc@AdobeID", "org": ORG, "exp": chrono::Utc::now().timestamp() + 600});
    let sign = |algorithm: Algorithm, claims: &Value| {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let call = |t: String| {
        app.request_with_token(Method::GET, "/data/core/ups/audiences", &t)
            .send()
    };
    // What is accepted, so that each refusal below is for its one difference.
    assert_eq!(
        call(sign(Algorithm::HS256, &claims))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut without_exp = claims.clone();
    without_exp.as_object_mut().unwrap().remove("exp");
    assert_token_invalid(call(sign(Algorithm::HS256, &without_exp)).await.unwrap()).await;
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        assert_token_invalid(call(sign(algorithm, &claims)).await.unwrap()).await;
    }
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_token_invalid(call(unsigned).await.unwrap()).await;
}

/// `verify` mode without `JWT_SECRET` starts by no path: `Application::build` (before it connects
/// anywhere), `Application::with_pool`, and the `migrate` command.
#[tokio::test]
async fn verify_mode_without_a_secret_is_refused_at_every_start() {
    const REFUSED: &str = "AUTH_MODE=verify needs JWT_SECRET to be set";
    let unreachable = "postgres://unused@127.0.0.1:1/none";
    let mut settings = Settings::for_database(unreachable);
    settings.auth_mode = AuthMode::Verify;
    settings.jwt_secret = None;
    let err = Application::build(settings.clone()).await.err().unwrap();
    assert_eq!(err.to_string(), REFUSED);
    let url = fresh_database().await;
    let pool = storage::connect(&url, 1, &DbTimeouts::none())
        .await
        .unwrap();
    let err = Application::with_pool(settings, pool, None).err().unwrap();
    assert_eq!(err.to_string(), REFUSED);
    let stderr = migrate_refusal(&[("AUTH_MODE", "verify"), ("DATABASE_URL", unreachable)]);
    assert!(stderr.contains(REFUSED), "{stderr}");
}

/// Runs `audience-server migrate` with `env` (and no `JWT_SECRET` but the one given), which must
/// fail; its standard error.
fn migrate_refusal(env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_audience-server"))
        .arg("migrate")
        .env_remove("JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "migrate started");
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn a_short_jwt_secret_is_refused_at_every_start() {
    let mut settings = Settings::for_database("postgres://unused@127.0.0.1:1/none");
    settings.auth_mode = AuthMode::Verify;
    settings.jwt_secret = Some(Secret("too-short-secret".into()));
    // `build` refuses before it connects anywhere.
    let err = Application::build(settings.clone()).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "JWT_SECRET is 16 bytes; it must be at least 32"
    );
    let url = fresh_database().await;
    let pool = storage::connect(&url, 1, &DbTimeouts::none())
        .await
        .unwrap();
    let err = Application::with_pool(settings, pool, None).err().unwrap();
    assert_eq!(
        err.to_string(),
        "JWT_SECRET is 16 bytes; it must be at least 32"
    );
    let stderr = migrate_refusal(&[
        ("AUTH_MODE", "verify"),
        ("JWT_SECRET", "too-short-secret"),
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/none"),
    ]);
    assert!(
        stderr.contains("JWT_SECRET is 16 bytes; it must be at least 32"),
        "{stderr}"
    );
}

#[test]
fn help_lists_the_settings_but_no_secret() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_audience-server"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:database-password-123@db.internal/audiences",
        )
        .env("JWT_SECRET", "jwt-secret-value-of-at-least-32-bytes")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for secret in ["database-password-123", "jwt-secret-value", "db.internal"] {
        assert!(!help.contains(secret), "--help printed {secret}");
    }
    for setting in [
        "DATABASE_URL",
        "JWT_SECRET",
        "JWT_ISSUER",
        "MAX_NAME_CHARS",
        "MAX_SANDBOXES_PER_ORG",
        "DB_STATEMENT_TIMEOUT_MS",
    ] {
        assert!(help.contains(setting), "--help lacks {setting}");
    }
}

#[tokio::test]
async fn pooled_connections_carry_the_timeouts() {
    let url = fresh_database().await;
    let timeouts = DbTimeouts {
        statement_ms: 1234,
        lock_ms: 567,
        idle_in_transaction_ms: 8910,
    };
    let pool = storage::connect(&url, 2, &timeouts).await.unwrap();
    for (name, value) in [
        ("statement_timeout", "1234ms"),
        ("lock_timeout", "567ms"),
        ("idle_in_transaction_session_timeout", "8910ms"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(shown, value, "{name}");
    }
}

/// A 503 in the service's shape with `Retry-After`, whose message says nothing of the database.
async fn assert_unavailable(res: Response) {
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("2".to_owned())
    );
    let got = assert_error(res, 503, "UPAPI-113503-503").await;
    assert_eq!(
        got,
        "The service is busy or its database is not reachable. Retry after the time in the Retry-After header."
    );
}

/// Holds the row lock of an audience from the test's own connection until the transaction ends.
async fn lock_row(app: &TestApp, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM audiences WHERE id = $1::uuid FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

fn describe(text: &str) -> Value {
    json!([{"op": "add", "path": "/description", "value": text}])
}

#[tokio::test]
async fn a_lock_timeout_answers_503_with_retry_after_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(|s| {
        s.db_timeouts.lock_ms = 200;
    })
    .await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap();
    let held = lock_row(&app, id).await;
    assert_unavailable(app.patch_audience(id, &describe("blocked")).await).await;
    // Other work goes on while the lock is held.
    assert_eq!(app.created(json!({"name": "other"})).await["name"], "other");
    held.rollback().await.unwrap();
    let res = app.patch_audience(id, &describe("free")).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_statement_timeout_answers_503_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.db_timeouts.lock_ms = 0;
        s.db_timeouts.statement_ms = 300;
    })
    .await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap();
    let held = lock_row(&app, id).await;
    assert_unavailable(app.patch_audience(id, &describe("blocked")).await).await;
    held.rollback().await.unwrap();
    assert_eq!(
        app.patch_audience(id, &describe("free")).await.status(),
        200
    );
}

#[tokio::test]
async fn a_connection_ended_by_the_database_answers_503_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.db_timeouts.lock_ms = 0;
        s.db_timeouts.statement_ms = 0;
    })
    .await;
    let audience = app.created(platform_audience()).await;
    let id = audience["id"].as_str().unwrap().to_owned();
    let held = lock_row(&app, &id).await;
    let waiting = describe("waiting");
    let patch = app.patch_audience(&id, &waiting);
    let terminate = async {
        // The server's statement waits on our lock; end its session as an administrator would.
        for _ in 0..200 {
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            if !ended.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the PATCH never waited on the lock");
    };
    let (res, ()) = tokio::join!(patch, terminate);
    assert_unavailable(res).await;
    held.rollback().await.unwrap();
    assert_eq!(
        app.patch_audience(&id, &describe("again")).await.status(),
        200
    );
}

/// A tenant that sends the largest allowed bodies back to back takes the machine from everyone:
/// its organisation's share (bytes of requests and responses per second) runs out and it is
/// answered 429 with `Retry-After`, before its body is read, while another organisation is served.
#[tokio::test]
async fn an_organisation_that_floods_the_server_is_held_to_its_share() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_body_bytes = 64 * 1024;
        s.limits.max_audience_bytes = 64 * 1024;
        s.limits.max_list_page_bytes = 64 * 1024;
        s.limits.tenant_bytes_per_sec = 20 * 1024;
        s.limits.tenant_burst_bytes = 256 * 1024;
    })
    .await;
    let big = json!({"name": "big", "blob": "x".repeat(60 * 1024)});
    let mut accepted = 0;
    let refused = loop {
        let res = app.create_audience(&big).await;
        if res.status() == 429 {
            break res;
        }
        assert_eq!(res.status(), 200);
        accepted += 1;
        assert!(
            accepted < 10,
            "a 256 KiB burst holds at most four 60 KiB bodies"
        );
    };
    // The burst holds four bodies of 60 KiB plus their responses, give or take one.
    assert!((2..=5).contains(&accepted), "{accepted}");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let message = assert_error(refused, 429, "UPAPI-113429-429").await;
    assert!(message.contains("TENANT_BYTES_PER_SEC"), "{message}");
    // Small requests are refused too while the bucket is empty.
    assert_eq!(app.list("limit=1").await.status(), 429);
    // Another organisation is served at once.
    let other = app
        .as_tenant("OTHER@AdobeOrg", "prod")
        .ups(Method::GET, "/audiences?limit=1")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}
