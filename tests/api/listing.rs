//! GET /audiences: paging, sorting, filters, links, and the plans that keep it inside one tenant.

use audience_server::{
    config::Limits,
    domain::{listing::ListQuery, Sandbox, Tenant},
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn page(app: &TestApp, query: &str) -> Value {
    let res = app.list(query).await;
    assert_eq!(res.status(), 200, "{query}");
    res.json().await.unwrap()
}

/// How a list orders an audience by `field`: its value, then its id.
fn sort_key(audience: &Value, field: &str) -> (i64, String) {
    (
        audience[field].as_i64().unwrap(),
        audience["id"].as_str().unwrap().to_owned(),
    )
}

fn ids(page: &Value) -> Vec<String> {
    page["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn page_shape_and_last_page_has_no_next() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.created(json!({"name": format!("a{i}")})).await);
    }
    let first = page(&app, "limit=2").await;
    assert_eq!(first["children"].as_array().unwrap().len(), 2);
    assert_eq!(
        first["_page"],
        json!({"totalCount": 5, "totalPages": 3, "sortField": "updateTime", "sort": "desc", "pageSize": 2, "limit": 2, "start": 0, "next": 2})
    );
    // The link repeats the query of the next page and adds its keyset cursor (opaque).
    let href = first["_links"]["next"]["href"].as_str().unwrap();
    let (query, cursor) = href.split_once("&cursor=").unwrap();
    assert_eq!(query, "@/audiences?start=2&limit=2&sort=updateTime:desc");
    assert!(
        !cursor.is_empty()
            && cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{cursor}"
    );
    let last = page(&app, "start=4&limit=2").await;
    assert_eq!(last["_page"]["pageSize"], 1);
    assert!(
        last["_page"].get("next").is_none(),
        "no next on the last page: {last}"
    );
    assert!(last["_links"].get("next").is_none());
    let beyond = page(&app, "start=10").await;
    assert_eq!(beyond["children"], json!([]));
    assert_eq!(beyond["_page"]["pageSize"], 0);
    assert!(beyond["_page"].get("next").is_none());
    // Defaults: 20 per page, newest update first, ties (writes in one millisecond) by id.
    let all = page(&app, "").await;
    assert_eq!(all["_page"]["limit"], 20);
    created.sort_by_key(|a| sort_key(a, "updateTime"));
    created.reverse();
    assert_eq!(all["children"], json!(created));
}

#[tokio::test]
async fn paging_visits_every_audience_once_in_order_while_writes_happen() {
    let app = TestApp::spawn().await;
    let mut originals = Vec::new();
    for i in 0..23 {
        originals.push(app.created(json!({"name": format!("n{i:02}")})).await);
    }
    // Creation order, ties (creates in one millisecond) broken by id as the list does.
    originals.sort_by_key(|a| sort_key(a, "creationTime"));
    let ids: Vec<String> = originals
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let mut seen = Vec::new();
    let mut query = "limit=5&sort=creationTime:asc".to_owned();
    let mut round = 0;
    loop {
        let p = page(&app, &query).await;
        for a in p["children"].as_array().unwrap() {
            seen.push(sort_key(a, "creationTime"));
        }
        // Between pages, other clients write: new audiences, and edits of ones already listed.
        app.created(json!({"name": format!("late{round}")})).await;
        let edited = &ids[round];
        let res = app
            .patch_audience(
                edited,
                &json!([{"op": "add", "path": "/description", "value": "edited"}]),
            )
            .await;
        assert_eq!(res.status(), 200);
        round += 1;
        let Some(next) = p["_page"].get("next") else {
            break;
        };
        let href = p["_links"]["next"]["href"].as_str().unwrap();
        assert!(href.contains(&format!("start={next}")));
        query = href.trim_start_matches("@/audiences?").to_owned();
    }
    // Every audience once, in creation order (strictly increasing: no repeats), the originals
    // among them; the later ones come after the originals created before them.
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let seen: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    let originals_seen: Vec<&String> = seen.iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(originals_seen, ids.iter().collect::<Vec<_>>());
    assert!(seen.len() > ids.len(), "the later audiences are listed too");
}

/// Under the default sort (newest update first) an edit moves an audience to the front, as on the
/// real service; this is why paging by `updateTime` while others edit is not stable
/// (docs/DECISIONS.md).
#[tokio::test]
async fn an_edit_moves_an_audience_to_the_front_of_the_default_sort() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        app.created(json!({"name": format!("m{i}")})).await;
    }
    let before = page(&app, "").await;
    let order = ids(&before);
    let last = order.last().unwrap().clone();
    let newest_other = before["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"] != last.as_str())
        .map(|a| a["updateTime"].as_i64().unwrap())
        .max()
        .unwrap();
    // The edit must come later than the others' writes; two writes may share a millisecond, so
    // edit until the audience's updateTime has passed theirs (each edit is a later write).
    let mut edited = Value::Null;
    for n in 0..1000 {
        let res = app
            .patch_audience(
                &last,
                &json!([{"op": "add", "path": "/description", "value": format!("edit {n}")}]),
            )
            .await;
        assert_eq!(res.status(), 200);
        edited = res.json().await.unwrap();
        if edited["updateTime"].as_i64().unwrap() > newest_other {
            break;
        }
    }
    assert!(edited["updateTime"].as_i64().unwrap() > newest_other);
    let after = page(&app, "").await;
    assert_eq!(
        after["children"][0], edited,
        "the edited audience comes first"
    );
    let mut moved = vec![last];
    moved.extend_from_slice(&order[..2]);
    assert_eq!(ids(&after), moved, "the others keep their order");
}

#[tokio::test]
async fn sorts_by_every_listed_field_with_id_tie_break() {
    let app = TestApp::spawn().await;
    let specs = [
        ("b", "ns2", "draft"),
        ("a", "ns1", "published"),
        ("c", "ns1", "published"),
        ("a", "ns3", "draft"),
    ];
    for (i, (name, ns, state)) in specs.iter().enumerate() {
        app.created(json!({"name": name, "namespace": ns, "audienceId": format!("id{}", 3 - i), "lifecycleState": state, "type": "ExternalSegment"})).await;
    }
    let by = |field: &'static str, dir: &'static str| {
        let app = &app;
        async move {
            let p = page(app, &format!("sort={field}:{dir}")).await;
            p["children"].as_array().unwrap().clone()
        }
    };
    for field in [
        "name",
        "creationTime",
        "updateTime",
        "createEpoch",
        "updateEpoch",
        "lifecycleState",
        "audienceId",
        "namespace",
    ] {
        for dir in ["asc", "desc"] {
            let rows = by(field, dir).await;
            assert_eq!(rows.len(), 4);
            let key = |a: &Value| {
                let v = &a[field];
                let k = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{:020}", v.as_i64().unwrap()));
                (k, a["id"].as_str().unwrap().to_owned())
            };
            let got: Vec<_> = rows.iter().map(key).collect();
            let mut want = got.clone();
            want.sort();
            if dir == "desc" {
                want.reverse();
            }
            if field.ends_with("Epoch") {
                // Seconds tie more often; their order follows the millisecond columns.
                let secs: Vec<_> = got.iter().map(|(k, _)| k.clone()).collect();
                let mut sorted = secs.clone();
                sorted.sort();
                if dir == "desc" {
                    sorted.reverse();
                }
                assert_eq!(secs, sorted, "{field}:{dir}");
            } else {
                assert_eq!(got, want, "{field}:{dir}");
            }
        }
    }
    let p = page(&app, "sort=name:asc").await;
    assert_eq!(p["_page"]["sortField"], "name");
    assert_eq!(p["_page"]["sort"], "asc");
}

#[tokio::test]
async fn property_name_description_and_entity_type_filters() {
    let app = TestApp::spawn().await;
    app.created(json!({"name": "Gold Customers", "description": "Big SPENDERS", "labels": []}))
        .await;
    app.created(json!({"name": "Silver", "description": "medium", "schema": "_xdm.context.experienceevent"})).await;
    let ext = app.created(json!({"name": "External list", "audienceId": "ext-1", "namespace": "aam", "datasetId": "ds1"})).await;
    app.created(json!({"name": "Old", "lifecycleState": "draft"}))
        .await;
    let inactive = app.created(json!({"name": "Retired"})).await;
    let id = inactive["id"].as_str().unwrap();
    assert_eq!(
        app.patch_audience(
            id,
            &json!([{"op": "replace", "path": "/lifecycleState", "value": "inactive"}])
        )
        .await
        .status(),
        200
    );

    let count = |q: &'static str| {
        let app = &app;
        async move { page(app, q).await["_page"]["totalCount"].as_i64().unwrap() }
    };
    // Inactive is hidden without a property filter, listed with one.
    assert_eq!(count("").await, 4);
    assert_eq!(count("property=lifecycleState==inactive").await, 1);
    assert_eq!(count("property=name!=nothing").await, 5);
    assert_eq!(count("property=lifecycleState!=inactive").await, 4);
    assert_eq!(
        count("property=lifecycleState==active").await,
        3,
        "active is read as published"
    );
    // Exact matches, form-encoded values, %3D%3D operators, repeated filters.
    assert_eq!(count("property=name==Gold+Customers").await, 1);
    assert_eq!(count("property=name%3D%3DGold%20Customers").await, 1);
    assert_eq!(
        count("property=name==gold+customers").await,
        0,
        "property is exact"
    );
    assert_eq!(
        count("property=audienceId==ext-1&property=namespace==aam").await,
        1
    );
    assert_eq!(
        count("property=audienceId==ext-1&property=namespace==AEPSegments").await,
        0
    );
    assert_eq!(count("property=type==ExternalSegment").await, 1);
    assert_eq!(count("property=originName==CUSTOM_UPLOAD").await, 1);
    assert_eq!(count("property=datasetId==ds1").await, 1);
    assert_eq!(count("property=datasetId!=ds1").await, 4);
    let ext_id = ext["id"].as_str().unwrap();
    let q = format!("property=id=={ext_id}");
    assert_eq!(page(&app, &q).await["_page"]["totalCount"], 1);
    let creator = ext["createdBy"].as_str().unwrap();
    let q = format!("property=createdBy=={creator}");
    assert_eq!(page(&app, &q).await["_page"]["totalCount"], 5);
    // Contains, case-insensitive; wildcards in the value are literal.
    assert_eq!(count("name=gold").await, 1);
    assert_eq!(count("name=L").await, 4);
    assert_eq!(count("description=spenders").await, 1);
    assert_eq!(count("name=%25").await, 0);
    assert_eq!(count("name=_").await, 0);
    // entityType: no schema counts as profile.
    assert_eq!(count("entityType=_xdm.context.experienceevent").await, 1);
    assert_eq!(count("entityType=_xdm.context.profile").await, 3);
    // The default count comes from trigger-kept counters: they follow deletes and state changes.
    let gold = page(&app, "name=gold").await["children"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.delete_audience(&gold).await.status(), 204);
    assert_eq!(count("").await, 3);
    assert_eq!(
        app.patch_audience(
            id,
            &json!([{"op": "replace", "path": "/lifecycleState", "value": "published"}])
        )
        .await
        .status(),
        200
    );
    assert_eq!(count("").await, 4);
    let (counted, actual): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(n)::bigint FROM audience_counts), (SELECT count(*) FROM audiences)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counted, actual);
    // Links keep the filters.
    let p = page(&app, "limit=1&name=l&property=lifecycleState!=draft").await;
    let href = p["_links"]["next"]["href"].as_str().unwrap();
    let href = href.split("&cursor=").next().unwrap();
    assert_eq!(href, "@/audiences?start=1&limit=1&sort=updateTime:desc&name=l&property=lifecycleState%21%3Dinactive".replace("inactive", "draft"));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let app = TestApp::spawn().await;
    for (query, param) in [
        ("start=-1", "start"),
        ("start=abc", "start"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("sort=color:asc", "sort"),
        ("sort=name:sideways", "sort"),
        ("property=name", "property"),
        ("property=name~=x", "property"),
        ("property=color==red", "property"),
        ("entityType=", "entityType"),
    ] {
        let msg = assert_error(app.list(query).await, 400, "UPAPI-113401-400").await;
        assert!(msg.contains(&format!("'{param}'")), "{query}: {msg}");
    }
    assert_eq!(app.list("limit=1000").await.status(), 200);
    assert_eq!(app.list("unknownParam=1").await.status(), 200);
}

#[tokio::test]
async fn bulk_get_both_shapes_and_limits() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let b = app.created(external_audience()).await;
    let (ida, idb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let missing = uuid::Uuid::new_v4().to_string();
    for body in [
        json!({"ids": [{"id": ida}, {"id": idb}, {"id": missing}, {"id": "QU9fLTEz_6ed34f6f"}]}),
        json!({"ids": [ida, idb, missing, "QU9fLTEz_6ed34f6f"]}),
    ] {
        let res = app
            .ups(Method::POST, "/audiences/bulk-get")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 207);
        let r: Value = res.json().await.unwrap();
        let results = r["results"].as_object().unwrap();
        assert_eq!(results.len(), 4);
        assert_eq!(results[ida], a);
        assert_eq!(results[idb], b);
        for gone in [missing.as_str(), "QU9fLTEz_6ed34f6f"] {
            assert_eq!(results[gone]["status"], 404);
            assert_eq!(
                results[gone]["errors"]["404"][0]["code"],
                "UPAPI-113430-404"
            );
        }
    }
    let none = json!({"ids": [missing]});
    assert_error(
        app.ups(Method::POST, "/audiences/bulk-get")
            .json(&none)
            .send()
            .await
            .unwrap(),
        404,
        "UPAPI-113000-404",
    )
    .await;
    let empty = json!({"ids": []});
    assert_error(
        app.ups(Method::POST, "/audiences/bulk-get")
            .json(&empty)
            .send()
            .await
            .unwrap(),
        400,
        "UPAPI-113015-400",
    )
    .await;
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let msg = assert_error(
        app.ups(Method::POST, "/audiences/bulk-get")
            .json(&json!({"ids": many}))
            .send()
            .await
            .unwrap(),
        400,
        "UPAPI-113015-400",
    )
    .await;
    assert!(msg.contains("101"));
    let hundred: Vec<String> = std::iter::once(ida.to_owned())
        .chain((0..99).map(|_| uuid::Uuid::new_v4().to_string()))
        .collect();
    assert_eq!(
        app.ups(Method::POST, "/audiences/bulk-get")
            .json(&json!({"ids": hundred}))
            .send()
            .await
            .unwrap()
            .status(),
        207
    );
    for bad in [
        json!({}),
        json!({"ids": "x"}),
        json!({"ids": [1]}),
        json!({"ids": [{"key": "x"}]}),
    ] {
        assert_error(
            app.ups(Method::POST, "/audiences/bulk-get")
                .json(&bad)
                .send()
                .await
                .unwrap(),
            400,
            "UPLIB-101206-500",
        )
        .await;
    }
}

/// The statement a list sends (its page, its count and the walk over the page's bodies) stays
/// inside one sandbox's index range: with another tenant holding most rows, no plan scans the
/// table. The plans are of the server's own statement, built by storage for each query.
#[tokio::test]
async fn list_plans_use_the_tenant_indexes() {
    let app = TestApp::spawn().await;
    let mine = app.created(json!({"name": "seed"})).await;
    let other = app.as_tenant("OTHER@AdobeOrg", "prod");
    let theirs: Value = other
        .ups(Method::POST, "/audiences")
        .json(&json!({"name": "seed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sandbox_of = |a: &Value| a["sandbox"]["sandboxId"].as_str().unwrap().to_owned();
    // 30,000 rows for the other tenant and 3,000 for ours, written straight to the table.
    for (sandbox, n) in [(sandbox_of(&theirs), 30_000), (sandbox_of(&mine), 3_000)] {
        sqlx::query(
            "INSERT INTO audiences (id, sandbox_id, audience_id, namespace, name, audience_type, lifecycle_state,
                 schema_name, creation_time, update_time, etag, body)
             SELECT gen_random_uuid(), $1::uuid, 'a' || g, 'AEPSegments', 'name ' || g, 'SegmentDefinition',
                 CASE WHEN g % 10 = 0 THEN 'inactive' ELSE 'published' END, '_xdm.context.profile',
                 g, g, '\"e\"', '{}'::json
             FROM generate_series(1, $2) g",
        )
        .bind(sandbox)
        .bind(n)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query("VACUUM ANALYZE audiences")
        .execute(&app.pool)
        .await
        .unwrap();
    // The statement the server sends for each of these queries, with the same arguments.
    let tenant = Tenant::new(
        ORG.into(),
        Sandbox {
            sandbox_id: sandbox_of(&mine).parse().unwrap(),
            name: SANDBOX.into(),
            sandbox_type: "production".into(),
            is_default: true,
        },
    );
    for query in [
        "start=2000",
        "start=2000&sort=creationTime:asc",
        "start=2000&sort=name:asc",
        "start=2000&sort=audienceId:desc",
        "start=2000&sort=namespace:asc",
        "start=2000&sort=lifecycleState:asc",
        "limit=1000&sort=updateEpoch:asc",
        "property=lifecycleState==published&sort=name:desc",
        "property=namespace!=AEPSegments",
        "name=name+12&description=x",
        "entityType=_xdm.context.profile",
    ] {
        let q = ListQuery::parse(query, &Limits::default()).unwrap();
        let plan = audience_server::storage::audiences::explain_list(&app.pool, &tenant, &q)
            .await
            .unwrap()
            .join("\n");
        // The page, its count and the walk over its bodies each read the tenant's range only.
        assert!(!plan.contains("Seq Scan on audiences"), "{query}: {plan}");
        assert!(plan.contains("audiences_by_"), "{query}: {plan}");
        assert!(plan.contains("audiences_pkey"), "{query}: {plan}");
    }
    // And the API answers from those rows: ours only.
    let p = page(&app, "limit=1").await;
    assert_eq!(p["_page"]["totalCount"], 1 + 2_700);
}

/// The query of a page's `_links.next.href`.
fn next_query(page: &Value) -> Option<String> {
    let href = page["_links"].get("next")?["href"].as_str().unwrap();
    Some(href.trim_start_matches("@/audiences?").to_owned())
}

/// Following `_links.next.href` reads each next page from where the last one ended (its keyset
/// cursor), so audiences created meanwhile (at the head of the newest-first order) shift nothing:
/// every audience that existed when the walk began comes exactly once, in order, and `start` /
/// `_page.next` still count as before.
#[tokio::test]
async fn following_next_links_sees_every_audience_once_while_others_insert() {
    let app = TestApp::spawn().await;
    let mut originals = Vec::new();
    for i in 0..13 {
        originals.push(app.created(json!({"name": format!("w{i:02}")})).await);
    }
    originals.sort_by_key(|a| sort_key(a, "updateTime"));
    originals.reverse();
    let expected = ids(&json!({ "children": originals }));
    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    let mut round = 0;
    loop {
        let p = page(&app, &query).await;
        assert_eq!(p["_page"]["start"], seen.len() as u64, "{query}");
        seen.extend(ids(&p));
        // Others write between pages: new audiences land at the head of the order.
        for k in 0..2 {
            app.created(json!({"name": format!("late{round}-{k}")}))
                .await;
        }
        round += 1;
        let Some(next) = p["_page"].get("next") else {
            assert!(p["_links"].get("next").is_none());
            break;
        };
        assert_eq!(next.as_u64().unwrap(), seen.len() as u64);
        let q = next_query(&p).unwrap();
        assert!(
            q.starts_with(&format!(
                "start={next}&limit=3&sort=updateTime:desc&cursor="
            )),
            "{q}"
        );
        query = q;
    }
    // The count grows as others insert, so the walk ends when it has passed every original.
    assert_eq!(
        seen, expected,
        "every original once, newest first, none repeated"
    );
}

/// The cursor also serves every other sort, ascending or descending, with filters kept.
#[tokio::test]
async fn next_links_walk_every_sort_in_order() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        let name = ["b", "a", "c", "a", "b", "d", "a"][i];
        app.created(json!({"name": name, "description": format!("walk {i}")}))
            .await;
    }
    for sort in [
        "name:asc",
        "name:desc",
        "creationTime:asc",
        "updateEpoch:desc",
    ] {
        let all = page(&app, &format!("limit=100&sort={sort}&description=walk")).await;
        let mut seen = Vec::new();
        let mut query = format!("limit=2&sort={sort}&description=walk");
        loop {
            let p = page(&app, &query).await;
            seen.extend(ids(&p));
            match next_query(&p) {
                Some(q) => query = q,
                None => break,
            }
        }
        assert_eq!(seen, ids(&all), "{sort}");
    }
}

/// A cursor is read back only by the listing it was made for: altered, made up, moved to another
/// `start`, sort, filter or sandbox, it is a 400 naming `cursor`.
#[tokio::test]
async fn a_tampered_or_foreign_cursor_is_400_naming_it() {
    let app = TestApp::spawn().await;
    for i in 0..4 {
        app.created(json!({"name": format!("t{i}")})).await;
    }
    let q = next_query(&page(&app, "limit=2").await).unwrap();
    let cursor = q.split("cursor=").nth(1).unwrap().to_owned();
    assert_eq!(app.list(&q).await.status(), 200);
    // One character of the cursor changed.
    let mut chars: Vec<char> = cursor.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let altered: String = chars.into_iter().collect();
    let long = "A".repeat(5_000);
    for query in [
        format!("start=2&limit=2&cursor={altered}"),
        format!("start=2&limit=2&cursor={}", &cursor[..cursor.len() - 3]),
        "start=2&limit=2&cursor=not-a-cursor".to_owned(),
        "start=2&limit=2&cursor=".to_owned(),
        format!("start=1&limit=2&cursor={cursor}"),
        format!("start=2&limit=2&sort=name:asc&cursor={cursor}"),
        format!("start=2&limit=2&name=t&cursor={cursor}"),
        format!("start=2&limit=2&cursor={long}"),
    ] {
        let res = app.list(&query).await;
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert!(body.to_string().contains("'cursor'"), "{query}: {body}");
    }
    // Another sandbox of the same organisation, with the same audiences' positions: refused.
    let other = app.as_tenant(&app.org, "other-sandbox");
    for i in 0..4 {
        other
            .ups(Method::POST, "/audiences")
            .json(&json!({"name": format!("o{i}")}))
            .send()
            .await
            .unwrap();
    }
    let res = other
        .ups(Method::GET, &format!("/audiences?{q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A different page size with the same cursor is fine: the cursor holds a position only.
    let p = page(&app, &q.replace("limit=2", "limit=1")).await;
    assert_eq!(p["_page"]["pageSize"], 1);
}
