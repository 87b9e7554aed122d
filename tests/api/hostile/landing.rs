//! Landing zones against a hostile tenant: no sandbox can read, list, reach or learn of another's
//! files, through a run or through the blob API; links planted in a zone are never followed;
//! traversal in blob names and run paths is refused; only a token of the zone opens it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::{
        ais::{named, Ais, TUTORIAL_CSV},
        *,
    },
    landing::{assert_azure_error, credentials, names, put, raw, text, Creds},
};

const OTHER_ORG: &str = "0000000000000000000000AA@AdobeOrg";

/// A run of tenant `(org, sandbox)` over `path`, carried out by `w`; the run as it ended.
async fn run_as(
    t: &Ais,
    w: &audience_server::worker::Worker,
    org: &str,
    sandbox: &str,
    body: Value,
) -> Value {
    let view = t.app.as_tenant(org, sandbox);
    let send = |method: Method, path: String, body: Option<Value>| {
        let mut req = view.request(method, &format!("/data/core/ais{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert!(status.is_success(), "{body}");
            body
        }
    };
    let accepted = send(Method::POST, "/external-audience/".into(), Some(body)).await;
    w.drain().await.unwrap();
    let op = send(
        Method::GET,
        format!(
            "/external-audience/operations/{}",
            accepted["operationId"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let audience = op["audienceId"].as_str().unwrap().to_owned();
    let run = send(
        Method::POST,
        format!("/external-audience/{audience}/runs"),
        Some(json!({"dataFilterStartTime": 0})),
    )
    .await;
    w.drain().await.unwrap();
    send(
        Method::GET,
        format!(
            "/external-audience/{audience}/runs/{}",
            run["runId"].as_str().unwrap()
        ),
        None,
    )
    .await
}

/// The message of a failed run's DATASET_INGEST.
fn failure(run: &Value) -> String {
    assert_eq!(run["status"], "FAILED", "{run}");
    run["details"][0]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_run_cannot_read_another_sandboxs_files() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    // Tenant A (the default) has a file; B, another sandbox of the same org, and C, another org,
    // name the same path.
    t.write("DLZ", "shared/name.csv", TUTORIAL_CSV);
    let own = run_as(&t, &w, ORG, SANDBOX, named("shared/name.csv", "a")).await;
    assert_eq!(own["status"], "SUCCESS", "{own}");

    for (org, sandbox) in [(ORG, "dev-b"), (OTHER_ORG, SANDBOX)] {
        // Before the tenant ever asked for a zone, and after.
        for round in 0..2 {
            let theirs = run_as(
                &t,
                &w,
                org,
                sandbox,
                named("shared/name.csv", &format!("b{round}")),
            )
            .await;
            let never = run_as(
                &t,
                &w,
                org,
                sandbox,
                named("never/there.csv", &format!("n{round}")),
            )
            .await;
            // Exactly what a path that exists nowhere gets: no hint the file exists elsewhere.
            assert_eq!(
                failure(&theirs).replace("shared/name.csv", "X"),
                failure(&never).replace("never/there.csv", "X")
            );
            assert!(failure(&theirs).contains("does not exist"));
            credentials(&t.app, Some((org, sandbox))).await;
        }
        // A folder source sees only its own zone too.
        let mut folder = named("shared", &format!("folder-{sandbox}"));
        folder["sourceSpec"]["params"]["type"] = json!("folder");
        assert!(failure(&run_as(&t, &w, org, sandbox, folder).await).contains("does not exist"));
    }
}

#[tokio::test]
async fn run_paths_cannot_leave_the_zone() {
    let t = Ais::spawn().await;
    let a = credentials(&t.app, None).await;
    for path in [
        "../x.csv",
        "/etc/passwd",
        "DLZ/../../x.csv",
        "%2e%2e/x.csv",
        "%2E%2E%2Fx.csv",
        "a%5c..%5cx.csv",
        "a\\..\\x.csv",
        ".",
        "a//b.csv",
        &format!("../../{}/dlz-user-container/DLZ/x.csv", a.account),
    ] {
        let res = t
            .ais(Method::POST, "/external-audience/")
            .json(&named(path, "escape"))
            .send()
            .await
            .unwrap();
        let message = assert_error(res, 400, "100910-400").await;
        assert!(
            message.contains("'sourceSpec.params.path'"),
            "{path}: {message}"
        );
    }
}

#[tokio::test]
async fn links_planted_in_a_zone_are_never_followed() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let a = credentials(&t.app, None).await;
    // Another tenant's zone, with a file.
    let b = credentials(&t.app, Some((OTHER_ORG, "victim"))).await;
    assert_eq!(
        put(
            &t.app,
            &b.blob("DLZ/secret.csv"),
            b"ppid,list_id,delete,process_consent\nSECRET-OF-B,l,1,y\n"
        )
        .await
        .status(),
        201
    );
    let b_folder = t.landing.join(&b.account).join("dlz-user-container");
    // A file outside every zone.
    let outside = t.landing.join("outside.csv");
    std::fs::write(
        &outside,
        "ppid,list_id,delete,process_consent\nSECRET-OUTSIDE,l,1,y\n",
    )
    .unwrap();

    // Links planted in A's zone (by someone with a shell: the API cannot make one).
    let dlz = t.zone.join("DLZ");
    std::fs::create_dir_all(&dlz).unwrap();
    std::os::unix::fs::symlink(&outside, dlz.join("outside.csv")).unwrap();
    std::os::unix::fs::symlink(b_folder.join("DLZ/secret.csv"), dlz.join("theirs.csv")).unwrap();
    std::os::unix::fs::symlink(b_folder.join("DLZ"), dlz.join("their-folder")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dlz.join("environ.csv")).unwrap();
    std::fs::create_dir_all(dlz.join("links-only")).unwrap();
    std::os::unix::fs::symlink(&outside, dlz.join("links-only/a.csv")).unwrap();

    let mut everything = String::new();
    for (i, path) in [
        "outside.csv",
        "theirs.csv",
        "environ.csv",
        "their-folder/secret.csv",
    ]
    .iter()
    .enumerate()
    {
        let run = run_as(&t, &w, ORG, SANDBOX, named(path, &format!("link{i}"))).await;
        let message = failure(&run);
        assert!(message.contains("symbolic link"), "{path}: {message}");
        everything.push_str(&run.to_string());
    }
    for (i, path) in ["their-folder", "links-only"].iter().enumerate() {
        let mut folder = named(path, &format!("folder{i}"));
        folder["sourceSpec"]["params"]["type"] = json!("folder");
        let run = run_as(&t, &w, ORG, SANDBOX, folder).await;
        failure(&run);
        everything.push_str(&run.to_string());
    }
    assert!(!everything.contains("SECRET"), "{everything}");
    assert!(
        !everything.contains("JWT") && !everything.contains("PATH="),
        "{everything}"
    );

    // Through the blob API a link is not a blob: not found, not listed.
    for name in [
        "DLZ/outside.csv",
        "DLZ/theirs.csv",
        "DLZ/their-folder/secret.csv",
        "DLZ/environ.csv",
    ] {
        let res = t.app.client.get(a.blob(name)).send().await.unwrap();
        assert_azure_error(res, 404, "BlobNotFound").await;
        let res = t.app.client.delete(a.blob(name)).send().await.unwrap();
        assert_azure_error(res, 404, "BlobNotFound").await;
    }
    for query in ["", "&prefix=DLZ/their-folder/"] {
        let xml = text(
            &t.app,
            &a.list(&format!("restype=container&comp=list{query}")),
        )
        .await;
        assert!(names(&xml).is_empty(), "{xml}");
    }
    // Writing through a linked folder is refused and lands nowhere.
    let res = put(&t.app, &a.blob("DLZ/their-folder/planted.csv"), b"x").await;
    assert_azure_error(res, 409, "PathConflict").await;
    assert!(!b_folder.join("DLZ/planted.csv").exists());
    // Replacing a link by an upload replaces the link itself, never its target.
    assert_eq!(
        put(&t.app, &a.blob("DLZ/outside.csv"), b"mine")
            .await
            .status(),
        201
    );
    assert!(std::fs::read_to_string(&outside)
        .unwrap()
        .contains("SECRET-OUTSIDE"));
    let res = t
        .app
        .client
        .get(b.blob("DLZ/secret.csv"))
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().contains("SECRET-OF-B"));
}

#[tokio::test]
async fn traversal_in_blob_names_is_refused() {
    let t = Ais::spawn().await;
    let a = credentials(&t.app, None).await;
    let b = credentials(&t.app, Some((ORG, "neighbour"))).await;
    assert_eq!(
        put(&t.app, &b.blob("DLZ/target.csv"), b"b").await.status(),
        201
    );
    // Sent as raw bytes: HTTP clients normalise dot segments (and `%2e%2e`, as URL parsers do)
    // before sending, a hostile client does not.
    let path_of = |url: String| url[url.find(&format!("/{}/", a.account)).unwrap()..].to_owned();
    for name in [
        "../x.csv",
        "DLZ/../../../x.csv",
        "./x.csv",
        "//x.csv",
        "%2e%2e/x.csv",
        "DLZ/%2E%2E/%2E%2E/x.csv",
        "%2e%2e%2f%2e%2e%2fx.csv",
        "DLZ%2f..%2fx.csv",
        "a%5c..%5cx.csv",
        "%2Fetc%2Fpasswd",
        "DLZ/%2e/x.csv",
        "DLZ/%00.csv",
        &format!(
            "%2e%2e/%2e%2e/{}/dlz-user-container/DLZ/target.csv",
            b.account
        ),
        &format!("../../{}/dlz-user-container/DLZ/target.csv", b.account),
        &format!("{}.csv", "n".repeat(256)),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let request = format!(
                "{method} {} HTTP/1.1\r\nHost: x\r\nx-ms-blob-type: BlockBlob\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
                path_of(a.blob(name))
            );
            let (status, text) = raw(&t.app, request.as_bytes()).await;
            assert_eq!(status, 400, "{method} {name}: {text}");
            assert!(
                text.contains("x-ms-error-code: InvalidResourceName")
                    && text.contains("The specified resource name contains invalid characters"),
                "{method} {name}: {text}"
            );
        }
    }
    // Nothing landed outside A's container, and B's file is untouched.
    let stray: Vec<_> = std::fs::read_dir(&t.landing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut expected = vec![a.account.clone(), b.account.clone()];
    expected.sort();
    let mut stray = stray;
    stray.sort();
    assert_eq!(stray, expected);
    let res = t
        .app
        .client
        .get(b.blob("DLZ/target.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "b");
}

#[tokio::test]
async fn only_a_token_of_the_zone_opens_it() {
    let t = Ais::spawn().await;
    let a = credentials(&t.app, None).await;
    let b = credentials(&t.app, Some((OTHER_ORG, SANDBOX))).await;
    assert_eq!(put(&t.app, &a.blob("DLZ/a.csv"), b"a").await.status(), 201);
    assert_eq!(put(&t.app, &b.blob("DLZ/b.csv"), b"b").await.status(), 201);

    // B's own listing shows only B's file.
    let xml = text(&t.app, &b.list("restype=container&comp=list")).await;
    assert_eq!(names(&xml), ["DLZ/b.csv"]);

    // B's token on A's container, A's token on an account that does not exist: the same 403,
    // with the same detail, so an account's existence is not revealed either.
    let foreign = Creds {
        token: b.token.clone(),
        ..a.clone()
    };
    let unknown = Creds {
        container: a.container.replace(&a.account, "dlblobstore0000000000000"),
        ..a.clone()
    };
    let mut details = Vec::new();
    for creds in [&foreign, &unknown] {
        for (method, url) in [
            (Method::GET, creds.blob("DLZ/a.csv")),
            (Method::PUT, creds.blob("DLZ/planted.csv")),
            (Method::DELETE, creds.blob("DLZ/a.csv")),
            (Method::GET, creds.list("restype=container&comp=list")),
        ] {
            let res = t
                .app
                .client
                .request(method, &url)
                .header("x-ms-blob-type", "BlockBlob")
                .body("x")
                .send()
                .await
                .unwrap();
            let body = assert_azure_error(res, 403, "AuthenticationFailed").await;
            details.push(
                body.split("<AuthenticationErrorDetail>")
                    .nth(1)
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
    // The Adobe headers open nothing here: the blob API knows only SAS tokens.
    let res = t
        .app
        .request(
            Method::GET,
            &format!("/{}/dlz-user-container/DLZ/a.csv", a.account),
        )
        .send()
        .await
        .unwrap();
    assert_azure_error(res, 403, "AuthenticationFailed").await;

    // Tampered tokens: a changed permission, expiry, identifier or signature.
    let tampered = [
        a.token.replace("sp=racwdlm", "sp=rl"),
        a.token.replace("se=", "se=2999"),
        a.token.replacen("si=dlz-", "si=dlz-0", 1),
        {
            let (head, sig) = a.token.split_once("&sig=").unwrap();
            let mut sig = sig.to_owned();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            sig.replace_range(0..1, flipped);
            format!("{head}&sig={sig}")
        },
        a.token.split("&sig=").next().unwrap().to_owned(),
    ];
    for token in tampered {
        let url = format!("{}/DLZ/a.csv?{token}", a.container);
        let res = t.app.client.get(&url).send().await.unwrap();
        assert_azure_error(res, 403, "AuthenticationFailed").await;
    }
    // Every file is as it was.
    let res = t.app.client.get(a.blob("DLZ/a.csv")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "a");
    assert!(!t.zone.join("DLZ/planted.csv").exists());
}
