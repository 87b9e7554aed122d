//! Landing zones over HTTP: Adobe's landing-zone endpoints, the Azure Blob subset as Azure answers
//! it, the curl upload of Adobe's documentation feeding a run to SUCCESS, bounds, token expiry,
//! file expiry.

use std::time::Duration as StdDuration;

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::Duration;
use md5::{Digest, Md5};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    ais::{named, Ais},
    *,
};

pub const CREDENTIALS: &str =
    "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone";
pub const REFRESH: &str =
    "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone&action=refresh";

/// A sandbox's landing-zone credentials.
#[derive(Clone, Debug)]
pub struct Creds {
    pub account: String,
    pub token: String,
    /// `SASUri` without its query: the container URL.
    pub container: String,
    pub body: Value,
}

impl Creds {
    pub fn from_body(body: Value) -> Self {
        let uri = body["SASUri"].as_str().unwrap().to_owned();
        let (container, query) = uri.split_once('?').unwrap();
        assert_eq!(query, body["SASToken"].as_str().unwrap());
        Creds {
            account: body["storageAccountName"].as_str().unwrap().to_owned(),
            token: query.to_owned(),
            container: container.to_owned(),
            body,
        }
    }

    /// The URL of a blob (the name as it goes on the wire), with the token.
    pub fn blob(&self, name: &str) -> String {
        format!("{}/{name}?{}", self.container, self.token)
    }

    /// The container URL with an operation's query and the token.
    pub fn list(&self, query: &str) -> String {
        format!("{}?{query}&{}", self.container, self.token)
    }
}

/// The credentials of a tenant (`None`: the app's default tenant).
pub async fn credentials(app: &TestApp, tenant: Option<(&str, &str)>) -> Creds {
    let req = match tenant {
        None => app.request(Method::GET, CREDENTIALS),
        Some((org, sandbox)) => app
            .as_tenant(org, sandbox)
            .request(Method::GET, CREDENTIALS),
    };
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    Creds::from_body(res.json().await.unwrap())
}

/// Put Blob, as Adobe's curl example sends it.
pub async fn put(app: &TestApp, url: &str, data: &[u8]) -> Response {
    app.client
        .put(url)
        .header("x-ms-blob-type", "BlockBlob")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// Asserts an Azure error: status, `x-ms-error-code`, the XML body with the same code. Returns
/// the body.
pub async fn assert_azure_error(res: Response, status: u16, code: &str) -> String {
    let got = res.status().as_u16();
    let header = res
        .headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(res.headers().contains_key("x-ms-request-id"));
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(header.as_deref(), Some(code), "{body}");
    assert_eq!(content_type.as_deref(), Some("application/xml"), "{body}");
    assert!(
        body.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><Error><Code>"#)
            && body.contains(&format!("<Code>{code}</Code>")),
        "{body}"
    );
    body
}

/// Sends raw bytes to the server and reads the answer until it closes: for requests an HTTP client
/// would normalise (`..` in a path) or frame its own way (chunked bodies).
pub async fn raw(app: &TestApp, request: &[u8]) -> (u16, String) {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(StdDuration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn landing_zone_endpoints_answer_in_adobes_shape() {
    // The credential's expiry is a date: issue it mid-day, so the day this test expects is the
    // day the server used, whenever the test runs.
    let clock = audience_server::domain::clock::Clock::adjustable();
    to_next_midday(&clock);
    let c = clock.clone();
    let app = TestApp::spawn_with(move |s| s.clock = c).await;
    let res = app
        .request(
            Method::GET,
            "/data/foundation/connectors/landingzone?type=user_drop_zone",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let zone: Value = res.json().await.unwrap();
    assert_eq!(
        zone,
        json!({"containerName": "dlz-user-container", "containerTTL": "7"})
    );

    let creds = credentials(&app, None).await;
    let keys: Vec<&String> = creds.body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "containerName",
            "SASToken",
            "storageAccountName",
            "SASUri",
            "expiryDate"
        ]
    );
    assert_eq!(creds.body["containerName"], "dlz-user-container");
    assert_eq!(creds.account.len(), 24);
    assert!(creds.account.starts_with("dlblobstore"));
    assert_eq!(
        creds.container,
        format!("{}/{}/dlz-user-container", app.address, creds.account)
    );
    assert!(
        creds.token.starts_with("sv=2020-04-08&si=dlz-")
            && creds.token.contains("&sr=c&sp=racwdlm&se=")
            && creds.token.contains("&sig="),
        "{}",
        creds.token
    );
    let expiry = (clock.now() + Duration::days(90))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(creds.body["expiryDate"], expiry.as_str());
    // Reading again gives the same credential; the alias without /data too.
    let again = app
        .request(
            Method::GET,
            "/foundation/connectors/landingzone/credentials/?type=user_drop_zone",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        Creds::from_body(again.json().await.unwrap()).token,
        creds.token
    );

    // Refresh: a new token, same zone, the old one revoked.
    put(&app, &creds.blob("a.csv"), b"x").await;
    let res = app
        .request(Method::POST, REFRESH)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let fresh = Creds::from_body(res.json().await.unwrap());
    assert_eq!(fresh.account, creds.account);
    assert_ne!(fresh.token, creds.token);
    let body = assert_azure_error(
        app.client.get(creds.blob("a.csv")).send().await.unwrap(),
        403,
        "AuthenticationFailed",
    )
    .await;
    assert!(body.contains("revoked"), "{body}");
    let res = app.client.get(fresh.blob("a.csv")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(credentials(&app, None).await.token, fresh.token);

    // Parameters are checked, in the service's shape.
    for (method, path, rule) in [
        (
            Method::GET,
            "/data/foundation/connectors/landingzone",
            "'type' is required",
        ),
        (
            Method::GET,
            "/data/foundation/connectors/landingzone/credentials?type=dlz_destination",
            "'type' must be 'user_drop_zone'",
        ),
        (
            Method::POST,
            "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone",
            "'action' is required",
        ),
        (
            Method::POST,
            "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone&action=rotate",
            "'action' must be 'refresh'",
        ),
    ] {
        let res = app.request(method, path).send().await.unwrap();
        let message = assert_error(res, 400, "1100-400").await;
        assert!(message.contains(rule), "{path}: {message}");
    }
    let res = app
        .request(
            Method::DELETE,
            "/data/foundation/connectors/landingzone/credentials",
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 405, "UPAPI-113405-405").await;

    // The header gate applies to these endpoints like to the other families.
    let res = app
        .client
        .get(format!("{}{CREDENTIALS}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "403010");
}

/// The README's tutorial: Adobe's curl upload into the zone, then an external audience and a run
/// that reads the uploaded file, to SUCCESS.
#[tokio::test]
async fn the_curl_upload_of_adobes_docs_feeds_a_run() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let creds = credentials(&t.app, None).await;
    let dir = std::env::temp_dir().join(format!("curl-upload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("example.csv");
    std::fs::write(
        &file,
        "ppid,list_id,delete,process_consent\nalice@example.com,l1,0,yes\nbob@example.com,l1,1,no\n",
    )
    .unwrap();
    let url = format!(
        "{}/DLZ/activation/sample-source/example.csv?{}",
        creds.container, creds.token
    );
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", "x-ms-blob-type: BlockBlob", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .await
        .expect("curl runs (the tutorial uploads with curl)");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");

    let audience = t
        .ready_audience(&w, named("activation/sample-source/example.csv", "curl"))
        .await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 764245635}))
        .await;
    w.drain().await.unwrap();
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(
        done["details"][0]["files"],
        json!(["DLZ/activation/sample-source/example.csv"])
    );
    assert_eq!(done["details"][1]["profilesStored"], 2);
}

/// A request with these headers and this body.
pub async fn call(
    app: &TestApp,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = app.client.request(method, url).body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// The text of a GET (a listing's XML).
pub async fn text(app: &TestApp, url: &str) -> String {
    app.client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_blob_api_answers_like_azure() {
    let app = TestApp::spawn().await;
    let c = credentials(&app, None).await;
    let data = b"ppid,list_id\nalice@example.com,l1\nbob@example.com,l2\n";
    let md5 = STANDARD.encode(Md5::digest(data));
    let one = c.blob("DLZ/one.csv");
    let two = c.blob("DLZ/two.csv");
    let block_blob = ("x-ms-blob-type", "BlockBlob");

    // Put Blob: 201, the headers Azure sends, the client's version and request id echoed.
    let res = call(
        &app,
        Method::PUT,
        &one,
        &[
            block_blob,
            ("x-ms-version", "2025-01-05"),
            ("x-ms-client-request-id", "client-42"),
            ("x-ms-meta-owner", "ignored"),
            ("Content-MD5", &md5),
        ],
        data,
    )
    .await;
    assert_eq!(res.status(), 201);
    let h = res.headers().clone();
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("\"0x") && etag.ends_with('"'), "{etag}");
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["content-md5"].to_str().unwrap(), md5);
    assert_eq!(h["x-ms-version"], "2025-01-05");
    assert_eq!(h["x-ms-client-request-id"], "client-42");
    assert_eq!(h["x-ms-request-id"], h["x-request-id"]);

    // Get Blob, Get Blob Properties.
    let res = app.client.get(&one).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(res.headers()["x-ms-blob-type"], "BlockBlob");
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(res.bytes().await.unwrap(), &data[..]);
    let res = app.client.head(&one).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert!(res.bytes().await.unwrap().is_empty());

    // Ranges: x-ms-range wins over Range; 416 past the end; a range's MD5 when asked.
    let ranged = [
        ("Range", "bytes=0-0"),
        ("x-ms-range", "bytes=5-11"),
        ("x-ms-range-get-content-md5", "true"),
    ];
    let res = call(&app, Method::GET, &one, &ranged, b"").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 5-11/{}", data.len()).as_str()
    );
    assert_eq!(
        res.headers()["content-md5"].to_str().unwrap(),
        STANDARD.encode(Md5::digest(&data[5..12]))
    );
    assert_eq!(res.bytes().await.unwrap(), &data[5..12]);
    let res = call(
        &app,
        Method::GET,
        &one,
        &[("x-ms-range", "bytes=9999-")],
        b"",
    )
    .await;
    assert_azure_error(res, 416, "InvalidRange").await;

    // Conditions.
    let res = call(&app, Method::GET, &one, &[("If-None-Match", &etag)], b"").await;
    assert_eq!(res.status(), 304);
    let res = call(&app, Method::GET, &one, &[("If-Match", "\"0xother\"")], b"").await;
    assert_azure_error(res, 412, "ConditionNotMet").await;
    let res = call(
        &app,
        Method::PUT,
        &one,
        &[block_blob, ("If-None-Match", "*")],
        b"other",
    )
    .await;
    assert_azure_error(res, 409, "BlobAlreadyExists").await;

    // Refusals, in Azure's XML (never turned into JSON by the request context).
    let body = assert_azure_error(
        call(&app, Method::PUT, &two, &[], b"x").await,
        400,
        "MissingRequiredHeader",
    )
    .await;
    assert!(body.contains("x-ms-blob-type"), "{body}");
    let res = call(
        &app,
        Method::PUT,
        &two,
        &[("x-ms-blob-type", "AppendBlob")],
        b"",
    )
    .await;
    assert_azure_error(res, 400, "InvalidHeaderValue").await;
    let other_md5 = STANDARD.encode(Md5::digest(b"something else"));
    let res = call(
        &app,
        Method::PUT,
        &two,
        &[block_blob, ("Content-MD5", &other_md5)],
        b"x",
    )
    .await;
    assert_azure_error(res, 400, "Md5Mismatch").await;
    let res = app.client.get(&two).send().await.unwrap();
    assert_azure_error(res, 404, "BlobNotFound").await;
    let res = app.client.head(&two).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-ms-error-code"], "BlobNotFound");
    let res = app.client.post(&one).send().await.unwrap();
    assert_azure_error(res, 405, "UnsupportedHttpVerb").await;
    let res = call(
        &app,
        Method::PUT,
        &format!("{one}&comp=appendblock"),
        &[],
        b"",
    )
    .await;
    assert_azure_error(res, 400, "UnsupportedQueryParameter").await;
    // A name that is a folder of other blobs cannot be a blob too.
    let res = put(&app, &c.blob("DLZ"), b"x").await;
    assert_azure_error(res, 409, "PathConflict").await;

    // Put Block and Put Block List, in the list's order.
    let blocks = c.blob("DLZ/blocks.csv");
    let block = |i: u8| STANDARD.encode(format!("block-{i:04}"));
    let put_block = |id: &str, body: &'static [u8]| {
        let url = format!("{blocks}&comp=block&blockid={}", urlencode(id));
        let app = &app;
        async move { call(app, Method::PUT, &url, &[], body).await }
    };
    let commit = |xml: String| {
        let url = format!("{blocks}&comp=blocklist");
        let app = &app;
        async move { call(app, Method::PUT, &url, &[], xml.as_bytes()).await }
    };
    let list = |ids: &[String]| {
        let latest: String = ids
            .iter()
            .map(|id| format!("<Latest>{id}</Latest>"))
            .collect();
        format!(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>{latest}</BlockList>"#)
    };
    for (i, part) in [(1u8, &b"one,"[..]), (2, b"two,"), (3, b"three")] {
        let res = put_block(&block(i), part).await;
        assert_eq!(res.status(), 201);
        assert!(res.headers().contains_key("content-md5"));
    }
    // Not visible before the commit.
    let res = app.client.get(&blocks).send().await.unwrap();
    assert_azure_error(res, 404, "BlobNotFound").await;
    assert_azure_error(
        commit(list(&[block(3), block(9)])).await,
        400,
        "InvalidBlockList",
    )
    .await;
    assert_azure_error(
        commit("<BlockList><Latest>".into()).await,
        400,
        "InvalidXmlDocument",
    )
    .await;
    let res = put_block(&STANDARD.encode("short"), b"x").await;
    assert_azure_error(res, 400, "InvalidBlobOrBlock").await;
    assert_azure_error(put_block("!!", b"x").await, 400, "InvalidBlockId").await;
    let res = commit(list(&[block(3), block(1), block(2)])).await;
    assert_eq!(res.status(), 201);
    assert!(res.headers().contains_key("etag"));
    assert_eq!(text(&app, &blocks).await, "threeone,two,");
    // Committed blocks are gone: committing them again is refused.
    assert_azure_error(commit(list(&[block(1)])).await, 400, "InvalidBlockList").await;

    // List Blobs: Azure's XML, prefix, delimiter, paging with markers.
    put(&app, &c.blob("DLZ/sub/three.csv"), b"3").await;
    put(&app, &c.blob("other.csv"), b"o").await;
    let res = app
        .client
        .get(c.list("restype=container&comp=list&prefix=DLZ/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/xml");
    let xml = res.text().await.unwrap();
    assert!(
        xml.starts_with(
            r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint=""#
        ),
        "{xml}"
    );
    assert_eq!(
        names(&xml),
        ["DLZ/blocks.csv", "DLZ/one.csv", "DLZ/sub/three.csv"]
    );
    assert!(xml.contains(&format!(
        "<Etag>{}</Etag><Content-Length>{}</Content-Length>",
        etag.trim_matches('"'),
        data.len()
    )));
    let xml = text(&app, &c.list("restype=container&comp=list&delimiter=/")).await;
    assert!(
        xml.contains("<BlobPrefix><Name>DLZ/</Name></BlobPrefix>"),
        "{xml}"
    );
    assert_eq!(names(&xml), ["other.csv"]);
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let query = format!("restype=container&comp=list&maxresults=2&marker={marker}");
        let xml = text(&app, &c.list(&query)).await;
        assert!(names(&xml).len() <= 2);
        seen.extend(names(&xml));
        match between(&xml, "<NextMarker>", "</NextMarker>") {
            Some(next) => marker = next,
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "DLZ/blocks.csv",
            "DLZ/one.csv",
            "DLZ/sub/three.csv",
            "other.csv"
        ]
    );
    let res = app
        .client
        .get(c.list("restype=container&comp=list&maxresults=0"))
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 400, "OutOfRangeQueryParameterValue").await;
    let res = app
        .client
        .get(c.list("restype=container&comp=list&marker=%25%25"))
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 400, "InvalidQueryParameterValue").await;
    let res = app
        .client
        .get(c.list("restype=container"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Delete Blob: 202, then gone, and its emptied folder with it.
    let three = c.blob("DLZ/sub/three.csv");
    let res = app.client.delete(&three).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["x-ms-delete-type-permanent"], "true");
    let res = app.client.delete(&three).send().await.unwrap();
    assert_azure_error(res, 404, "BlobNotFound").await;
    let xml = text(&app, &c.list("restype=container&comp=list&prefix=DLZ/sub")).await;
    assert!(names(&xml).is_empty(), "{xml}");
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_owned())
}

/// The blob names of a List Blobs answer, in order.
pub fn names(xml: &str) -> Vec<String> {
    xml.split("<Blob><Name>")
        .skip(1)
        .map(|part| part.split("</Name>").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn uploads_are_bounded_per_blob_and_per_zone() {
    let app = TestApp::spawn_with(|s| {
        s.landing_max_blob_bytes = 1000;
        s.landing_max_zone_bytes = 2500;
        s.landing_max_files = 4;
    })
    .await;
    let c = credentials(&app, None).await;
    let body = assert_azure_error(
        put(&app, &c.blob("big.csv"), &[b'x'; 1001]).await,
        413,
        "RequestBodyTooLarge",
    )
    .await;
    assert!(body.contains("LANDING_MAX_BLOB_BYTES"), "{body}");

    // Without a length announced, the stream is cut at the bound and nothing is left behind.
    let path = c.blob("chunked.csv");
    let path = &path[path.find(&format!("/{}", c.account)).unwrap()..];
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nx-ms-blob-type: BlockBlob\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'y'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw(&app, &request).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("RequestBodyTooLarge"), "{text}");
    let res = app.client.get(c.blob("chunked.csv")).send().await.unwrap();
    assert_azure_error(res, 404, "BlobNotFound").await;

    for name in ["a.csv", "b.csv"] {
        assert_eq!(put(&app, &c.blob(name), &[b'x'; 1000]).await.status(), 201);
    }
    let body = assert_azure_error(
        put(&app, &c.blob("c.csv"), &[b'x'; 600]).await,
        413,
        "RequestBodyTooLarge",
    )
    .await;
    assert!(body.contains("LANDING_MAX_ZONE_BYTES"), "{body}");
    // Replacing a blob frees its own bytes.
    assert_eq!(
        put(&app, &c.blob("a.csv"), &[b'z'; 900]).await.status(),
        201
    );
    // Blocks count against the zone too.
    let res = app
        .client
        .put(format!("{}&comp=block&blockid=AAAA", c.blob("d.csv")))
        .body(vec![b'q'; 700])
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 413, "RequestBodyTooLarge").await;
    // And files: four at most.
    for name in ["e.csv", "f.csv"] {
        assert_eq!(put(&app, &c.blob(name), b"1").await.status(), 201);
    }
    let body = assert_azure_error(
        put(&app, &c.blob("g.csv"), b"1").await,
        413,
        "RequestBodyTooLarge",
    )
    .await;
    assert!(body.contains("LANDING_MAX_FILES"), "{body}");
    let res = app
        .client
        .put(format!("{}&comp=block&blockid=AAAA", c.blob("h.csv")))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 409, "BlockCountExceedsLimit").await;
    let res = app.client.delete(c.blob("e.csv")).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(put(&app, &c.blob("g.csv"), b"1").await.status(), 201);
}

#[tokio::test]
async fn tokens_expire_after_90_days_and_a_read_issues_a_new_one() {
    let t = Ais::spawn().await;
    let old = credentials(&t.app, None).await;
    assert_eq!(put(&t.app, &old.blob("x.csv"), b"x").await.status(), 201);
    t.clock.advance(Duration::days(90) + Duration::minutes(1));
    let body = assert_azure_error(
        t.app.client.get(old.blob("x.csv")).send().await.unwrap(),
        403,
        "AuthenticationFailed",
    )
    .await;
    assert!(body.contains("expiry"), "{body}");
    let new = credentials(&t.app, None).await;
    assert_ne!(new.token, old.token);
    assert_eq!(new.account, old.account);
    let res = t.app.client.get(new.blob("x.csv")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn files_expire_after_the_zone_ttl() {
    let t = Ais::spawn_with(|s| s.landing_ttl_days = 7).await;
    let w = t.worker("sweeper").await;
    let c = credentials(&t.app, None).await;
    assert_eq!(
        put(&t.app, &c.blob("DLZ/a/old.csv"), b"x").await.status(),
        201
    );
    assert_eq!(
        put(&t.app, &c.blob("DLZ/new.csv"), b"y").await.status(),
        201
    );
    // The files carry real times and only the clock moves: "new.csv" arrives a week later.
    std::fs::File::options()
        .write(true)
        .open(t.zone.join("DLZ/new.csv"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + StdDuration::from_secs(7 * 24 * 3600))
        .unwrap();
    t.clock.advance(Duration::days(6));
    assert_eq!(w.expire_landing_files().await.unwrap().files, 0);
    t.clock.advance(Duration::days(1) + Duration::minutes(1));
    let expired = w.expire_landing_files().await.unwrap();
    assert_eq!(expired.files, 1);
    let res = t
        .app
        .client
        .get(c.blob("DLZ/a/old.csv"))
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 404, "BlobNotFound").await;
    assert!(
        !t.zone.join("DLZ/a").exists(),
        "the emptied folder went too"
    );
    let res = t
        .app
        .client
        .get(c.blob("DLZ/new.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The server's own worker sweeps as it starts, then every minute.
    t.clock.advance(Duration::days(8));
    let (landing, clock) = (t.landing.clone(), t.clock.clone());
    let _second = TestApp::spawn_on(t.app.database_url.clone(), move |s| {
        s.landing_dir = Some(landing);
        s.clock = clock;
        s.worker_enabled = true;
    })
    .await;
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while t.zone.join("DLZ/new.csv").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never swept"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

const STREAMED_BYTES: usize = 96 * 1024 * 1024;

/// Runs in a process of its own (see `an_upload_streams_to_disk_in_bounded_memory`), so the peak
/// resident size it measures is its own: the server's and a client that makes the body on the fly.
#[tokio::test]
#[ignore = "run by an_upload_streams_to_disk_in_bounded_memory in a separate process"]
async fn streamed_upload_child() {
    let app = TestApp::spawn().await;
    let c = credentials(&app, None).await;
    let url = c.blob("DLZ/streamed.bin");
    let path = &url[url.find(&format!("/{}", c.account)).unwrap()..];
    let before = vm_hwm_kb();
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nx-ms-blob-type: BlockBlob\r\nContent-Length: {STREAMED_BYTES}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..STREAMED_BYTES / chunk.len() {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let growth_kb = vm_hwm_kb().saturating_sub(before);
    let res = app.client.head(&url).send().await.unwrap();
    assert_eq!(
        res.headers()["content-length"],
        STREAMED_BYTES.to_string().as_str()
    );
    println!(
        "uploaded {} kB, peak RSS growth {growth_kb} kB",
        STREAMED_BYTES / 1024
    );
    assert!(
        growth_kb * 1024 < (STREAMED_BYTES / 8) as u64,
        "peak memory grew by {growth_kb} kB for a {} kB upload",
        STREAMED_BYTES / 1024
    );
}

#[test]
fn an_upload_streams_to_disk_in_bounded_memory() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "landing::streamed_upload_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stdout.contains("peak RSS growth"), "{stdout}");
}

/// The signing key is made once, however many servers race to make it, and every replica on the
/// database honours the tokens of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_signing_key() {
    let url = fresh_database().await;
    let pool =
        audience_server::storage::connect(&url, 8, &audience_server::config::DbTimeouts::none())
            .await
            .unwrap();
    // Eight first callers, released together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                audience_server::storage::landing::secret(&pool)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut keys = Vec::new();
    for caller in callers {
        keys.push(caller.await.unwrap());
    }
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM landing_secret")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(
        keys.iter().all(|k| *k == stored),
        "every caller has the stored key"
    );
    pool.close().await;

    let landing = std::env::temp_dir().join(format!("replicas-{}", uuid::Uuid::new_v4()));
    let l = landing.clone();
    let one = TestApp::spawn_on(url.clone(), move |s| s.landing_dir = Some(l)).await;
    let l = landing.clone();
    let two = TestApp::spawn_on(url, move |s| s.landing_dir = Some(l)).await;
    let c = credentials(&one, None).await;
    assert_eq!(put(&one, &c.blob("DLZ/x.csv"), b"x").await.status(), 201);
    // The same token, sent to the other replica.
    let other = c.blob("DLZ/x.csv").replace(&one.address, &two.address);
    let res = two.client.get(&other).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "x");
    let _ = std::fs::remove_dir_all(&landing);
}
