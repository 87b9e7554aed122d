//! SQL for UPS audiences. `body` holds the rendered audience; the other columns are its
//! filterable and sortable fields, written from the same [`Audience`] in one statement.
//!
//! Every function returns data or a [`StoreError`]: a taken (namespace, audienceId) is
//! [`Conflict::AudienceKeyTaken`], a stored row that does not decode is `Corrupt`; what a client
//! is told is the API's business. Reads named `lock*` lock the rows they read until the
//! transaction ends; the others lock nothing.

use anyhow::anyhow;
use sqlx::{postgres::PgArguments, Arguments, AssertSqlSafe, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{violated_constraint, Conflict, StoreError};
use crate::domain::{
    audience::Audience,
    cursor::{Cursor, SortKey},
    lifecycle::Lifecycle,
    listing::{ListQuery, PropertyField, SortField},
    Tenant,
};

/// An audience as stored: its rendered JSON text and its current etag.
pub struct StoredAudience {
    pub body: String,
    pub etag: String,
}

/// An audience as rendered, without decoding it.
pub async fn get(
    pool: &PgPool,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<StoredAudience>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT body::text, etag FROM audiences WHERE sandbox_id = $1 AND id = $2")
            .bind(tenant.sandbox_id())
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(body, etag)| StoredAudience { body, etag }))
}

/// Reads an audience without locking it, on a pool or in a transaction; pair with
/// [`update_if_current`] or a `lock*` read.
pub async fn read<'e>(
    db: impl PgExecutor<'e>,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Audience>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT body::text FROM audiences WHERE sandbox_id = $1 AND id = $2")
            .bind(tenant.sandbox_id())
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.map(|(body,)| decode(&body)).transpose()
}

/// Reads an audience and locks its row FOR UPDATE until the transaction ends, so the write that
/// follows applies to exactly this version.
pub async fn lock(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Audience>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT body::text FROM audiences WHERE sandbox_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(body,)| decode(&body)).transpose()
}

/// Locks the audiences of `ids` that exist in the tenant, FOR UPDATE, in id order (the order every
/// transaction that writes several audiences takes them in; see
/// `service::audiences::delete_cascade`). Returns the ids found.
pub async fn lock_ids(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The rows are locked as they leave the sort, so in id order.
    Ok(sqlx::query_scalar(
        "SELECT id FROM audiences WHERE sandbox_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// A stored body was written by [`Audience::to_body`]: one that does not read back is a fault of
/// the store.
fn decode(body: &str) -> Result<Audience, StoreError> {
    serde_json::from_str(body)
        .map_err(anyhow::Error::from)
        .and_then(Audience::from_body)
        .map_err(StoreError::Corrupt)
}

/// A stored `lifecycle_state` (the schema allows only the three names).
fn decode_lifecycle(id: Uuid, name: &str) -> Result<Lifecycle, StoreError> {
    Lifecycle::from_name(name).ok_or_else(|| {
        StoreError::Corrupt(anyhow!(
            "audience {id} has lifecycle_state '{name}', which is not a state"
        ))
    })
}

fn conflict_or(e: sqlx::Error) -> StoreError {
    if violated_constraint(&e) == Some("audiences_namespace_audience_id_key") {
        StoreError::Conflict(Conflict::AudienceKeyTaken)
    } else {
        e.into()
    }
}

/// Inserts a new audience; returns the rendered body.
pub async fn insert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
) -> Result<String, StoreError> {
    let body = render(tenant, audience);
    let f = &audience.fields;
    sqlx::query(
        "INSERT INTO audiences (id, sandbox_id, audience_id, namespace, name, description, audience_type,
             origin_name, lifecycle_state, dataset_id, created_by, schema_name, creation_time,
             update_time, etag, dependencies, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::json)",
    )
    .bind(audience.id)
    .bind(tenant.sandbox_id())
    .bind(f.audience_id())
    .bind(f.namespace())
    .bind(&f.name)
    .bind(f.description())
    .bind(f.audience_type())
    .bind(f.origin_name())
    .bind(f.lifecycle.as_str())
    .bind(f.dataset_id())
    .bind(&audience.created_by)
    .bind(f.schema_name())
    .bind(audience.creation_time)
    .bind(audience.update_time)
    .bind(&audience.etag)
    .bind(&audience.dependencies)
    .bind(&body)
    .execute(&mut *conn)
    .await
    .map_err(conflict_or)?;
    Ok(body)
}

/// Writes a new version of a locked audience; returns the rendered body.
pub async fn update(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
) -> Result<String, StoreError> {
    update_where(conn, tenant, audience, None)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(anyhow!("audience {} vanished while locked", audience.id))
        })
}

/// Writes a new version only if the row still has `expected_etag`; `None` when another write
/// came first (or the audience is gone).
pub async fn update_if_current(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
    expected_etag: &str,
) -> Result<Option<String>, StoreError> {
    update_where(conn, tenant, audience, Some(expected_etag)).await
}

async fn update_where(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
    expected_etag: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let body = render(tenant, audience);
    let f = &audience.fields;
    let done = sqlx::query(
        "UPDATE audiences SET name = $3, description = $4, origin_name = $5, lifecycle_state = $6,
             dataset_id = $7, schema_name = $8, update_time = $9, etag = $10, dependencies = $11,
             body = $12::json
         WHERE sandbox_id = $1 AND id = $2 AND ($13::text IS NULL OR etag = $13)",
    )
    .bind(tenant.sandbox_id())
    .bind(audience.id)
    .bind(&f.name)
    .bind(f.description())
    .bind(f.origin_name())
    .bind(f.lifecycle.as_str())
    .bind(f.dataset_id())
    .bind(f.schema_name())
    .bind(audience.update_time)
    .bind(&audience.etag)
    .bind(&audience.dependencies)
    .bind(&body)
    .bind(expected_etag)
    .execute(&mut *conn)
    .await
    .map_err(conflict_or)?;
    Ok((done.rows_affected() == 1).then_some(body))
}

fn render(tenant: &Tenant, audience: &Audience) -> String {
    audience.to_body(tenant).to_string()
}

pub async fn delete(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM audiences WHERE sandbox_id = $1 AND id = $2")
        .bind(tenant.sandbox_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The lifecycle state of each of `ids` that exists in the tenant. The rows are locked FOR SHARE
/// so they cannot change state or vanish before the transaction commits (writers lock them
/// FOR UPDATE beforehand with [`lock_ids`], so this takes no new lock there).
pub async fn lock_states(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Lifecycle)>, StoreError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, lifecycle_state FROM audiences WHERE sandbox_id = $1 AND id = ANY($2)
         ORDER BY id FOR SHARE",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, state)| Ok((id, decode_lifecycle(id, &state)?)))
        .collect()
}

/// The audiences whose expressions reference `id`, with their lifecycle states.
pub async fn dependents_of(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Vec<(Uuid, Lifecycle)>, StoreError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, lifecycle_state FROM audiences
         WHERE sandbox_id = $1 AND dependencies <> '{}' AND dependencies @> ARRAY[$2]::uuid[]
         ORDER BY id",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, state)| Ok((id, decode_lifecycle(id, &state)?)))
        .collect()
}

/// Recomputes the `dependents` shown in the bodies of `ids` after a write changed who references
/// them. The `_etag` is left alone: the audience itself did not change.
pub async fn refresh_dependents(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    for id in ids {
        let Some(mut audience) = lock(conn, tenant, id).await? else {
            continue;
        };
        audience.dependents = dependents_of(conn, tenant, id)
            .await?
            .into_iter()
            .map(|(dependent, _)| dependent)
            .collect();
        let body = render(tenant, &audience);
        sqlx::query("UPDATE audiences SET body = $3::json WHERE sandbox_id = $1 AND id = $2")
            .bind(tenant.sandbox_id())
            .bind(id)
            .bind(&body)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// One page of a list and the number of audiences that match its filters.
pub struct Page {
    /// The page's audiences, already rendered and joined with commas.
    pub children: String,
    /// How many audiences `children` holds: `limit`, or fewer at the end of the list or when the
    /// page's byte budget ended it early.
    pub count: i64,
    pub total: i64,
    /// The sort key and id of the page's last audience (where the next page starts).
    pub last: Option<(SortKey, Uuid)>,
}

/// Lists a page. The page and the count are one statement, one round trip, which reads the
/// page's bodies one by one up to its byte budget (`list_statement` says how). With `after` the
/// page starts right after that position in the order (a keyset read) instead of skipping
/// `q.start` rows.
pub async fn list(
    pool: &PgPool,
    tenant: &Tenant,
    q: &ListQuery,
    after: Option<&Cursor>,
) -> Result<Page, StoreError> {
    let (sql, arguments) = list_statement(tenant, q, after)?;
    let (total, count, children, last_id, last_key): (
        i64,
        i64,
        String,
        Option<Uuid>,
        Option<String>,
    ) = sqlx::query_as_with(AssertSqlSafe(sql), arguments)
        .fetch_one(pool)
        .await?;
    let last = match (last_id, last_key) {
        (Some(id), Some(key)) => Some((decode_key(q.sort, id, key)?, id)),
        _ => None,
    };
    Ok(Page {
        children,
        count,
        total,
        last,
    })
}

/// A sort key read back as text: the time columns hold integers.
fn decode_key(sort: SortField, id: Uuid, key: String) -> Result<SortKey, StoreError> {
    if !sort.is_integer() {
        return Ok(SortKey::Text(key));
    }
    key.parse().map(SortKey::Int).map_err(|_| {
        StoreError::Corrupt(anyhow!(
            "audience {id} has the sort key '{key}', which is not an integer"
        ))
    })
}

/// The plan PostgreSQL makes for exactly the statement and arguments [`list`] sends for `q`, one
/// line of `EXPLAIN` per entry (the tests read it to check that a list stays inside the tenant's
/// index range).
pub async fn explain_list(
    pool: &PgPool,
    tenant: &Tenant,
    q: &ListQuery,
) -> Result<Vec<String>, StoreError> {
    let (sql, arguments) = list_statement(tenant, q, None)?;
    Ok(
        sqlx::query_scalar_with(AssertSqlSafe(format!("EXPLAIN {sql}")), arguments)
            .fetch_all(pool)
            .await?,
    )
}

/// The column a sort reads. Epoch seconds sort as their millisecond columns: the order is the
/// same, ties inside one second are broken by the milliseconds before the id.
fn sort_column(field: SortField) -> &'static str {
    match field {
        SortField::Name => "name",
        SortField::CreationTime | SortField::CreateEpoch => "creation_time",
        SortField::UpdateTime | SortField::UpdateEpoch => "update_time",
        SortField::LifecycleState => "lifecycle_state",
        SortField::AudienceId => "audience_id",
        SortField::Namespace => "namespace",
    }
}

/// The column a `property` filter compares; `id` is compared as text so any value is a valid
/// filter.
fn property_column(field: PropertyField) -> &'static str {
    match field {
        PropertyField::Id => "id::text",
        PropertyField::AudienceId => "audience_id",
        PropertyField::Name => "name",
        PropertyField::Namespace => "namespace",
        PropertyField::Type => "audience_type",
        PropertyField::OriginName => "origin_name",
        PropertyField::LifecycleState => "lifecycle_state",
        PropertyField::DatasetId => "dataset_id",
        PropertyField::CreatedBy => "created_by",
    }
}

/// The statement of a list page and its arguments. Column names come only from [`sort_column`]
/// and [`property_column`]; every value is an argument.
///
/// The page's bodies are read one by one in page order (`walk`), adding up their lengths, and the
/// walk stops at the first body that passes `q.page_bytes`: that one and the rest are left out
/// (the first body is always kept), so neither the database nor the server holds more than the
/// budget and one body, whatever `limit` says.
fn list_statement(
    tenant: &Tenant,
    q: &ListQuery,
    after: Option<&Cursor>,
) -> Result<(String, PgArguments), StoreError> {
    let mut arguments = PgArguments::default();
    // A keyset page skips nothing: the position is in its condition.
    let offset = if after.is_some() { 0 } else { q.start };
    arguments
        .add(tenant.sandbox_id())
        .and_then(|()| arguments.add(offset))
        .and_then(|()| arguments.add(q.limit))
        .and_then(|()| arguments.add(i64::try_from(q.page_bytes).unwrap_or(i64::MAX)))
        .map_err(sqlx::Error::Encode)?;
    // $1..$4 are the sandbox, offset, limit and byte budget.
    let mut filters = String::from("sandbox_id = $1");
    if q.hides_inactive() {
        filters.push_str(&format!(
            " AND lifecycle_state <> '{}'",
            Lifecycle::Inactive.as_str()
        ));
    }
    for p in &q.properties {
        let column = property_column(p.field);
        let operator = match (p.equals, p.field) {
            (true, _) => "=",
            (false, PropertyField::Id) => "<>",
            (false, _) => "IS DISTINCT FROM",
        };
        let value = bind_next(&mut arguments, p.value.clone())?;
        filters.push_str(&format!(" AND {column} {operator} {value}"));
    }
    if let Some(name) = &q.name {
        let value = bind_next(&mut arguments, contains_pattern(name))?;
        filters.push_str(&format!(" AND name ILIKE {value}"));
    }
    if let Some(description) = &q.description {
        let value = bind_next(&mut arguments, contains_pattern(description))?;
        filters.push_str(&format!(" AND description ILIKE {value}"));
    }
    if let Some(entity_type) = &q.entity_type {
        let value = bind_next(&mut arguments, entity_type.clone())?;
        filters.push_str(&format!(" AND schema_name = {value}"));
    }
    let column = sort_column(q.sort);
    let dir = q.direction();
    // The head of a list and every keyset page skip nothing, and `limit` is a checked integer
    // (1 to 1000): written into the text, they let PostgreSQL keep one generic plan for these
    // statements instead of planning each call anew (planning took as long as running a first
    // page). A real offset stays the argument $2, planned for its value (a generic plan cannot
    // know how far it skips). $2 and $3 are bound either way, so the numbering does not move.
    let offset = if after.is_some() || q.start == 0 {
        "0".to_owned()
    } else {
        "$2".to_owned()
    };
    let limit = q.limit;
    // The rows after the cursor's, in the listing's order: a range of the sort's index.
    let mut keyset = String::new();
    if let Some(cursor) = after {
        let key = match &cursor.key {
            SortKey::Int(n) => bind_next(&mut arguments, *n)?,
            SortKey::Text(s) => bind_next(&mut arguments, s.clone())?,
        };
        let id = bind_next(&mut arguments, cursor.id)?;
        let operator = if q.descending { "<" } else { ">" };
        keyset = format!(" AND ({column}, id) {operator} ({key}, {id})");
    }
    // The default listing (no filter but the hidden inactive ones) is counted from the
    // trigger-kept counters; any other filter counts the matching rows.
    let count = if q.has_filters() {
        format!("SELECT count(*) FROM audiences WHERE {filters}")
    } else {
        format!(
            "SELECT coalesce(sum(n), 0)::bigint FROM audience_counts
             WHERE sandbox_id = $1 AND lifecycle_state <> '{}'",
            Lifecycle::Inactive.as_str()
        )
    };
    let sql = format!(
        "WITH RECURSIVE page AS MATERIALIZED (
             SELECT id, {column} AS k FROM audiences WHERE {filters}{keyset}
             ORDER BY {column} {dir}, id {dir} OFFSET {offset} LIMIT {limit}),
         ordered AS MATERIALIZED (
             SELECT array_agg(id ORDER BY k {dir}, id {dir}) AS ids,
                    array_agg(k::text ORDER BY k {dir}, id {dir}) AS keys FROM page),
         walk (n, body, bytes) AS (
             SELECT 1, b.body, octet_length(b.body)::bigint
             FROM ordered, LATERAL (SELECT a.body::text AS body FROM audiences a
                                    WHERE a.sandbox_id = $1 AND a.id = ordered.ids[1]) b
             UNION ALL
             SELECT w.n + 1, b.body, w.bytes + 1 + octet_length(b.body)
             FROM walk w, ordered, LATERAL (SELECT a.body::text AS body FROM audiences a
                                            WHERE a.sandbox_id = $1 AND a.id = ordered.ids[w.n + 1]) b
             WHERE w.bytes <= $4),
         kept AS (SELECT n, body FROM walk WHERE n = 1 OR bytes <= $4),
         sent AS (SELECT count(*)::int AS n FROM kept)
         SELECT ({count}), sent.n::bigint,
                coalesce((SELECT string_agg(body, ',' ORDER BY n) FROM kept), ''),
                ordered.ids[sent.n], ordered.keys[sent.n]
         FROM sent, ordered"
    );
    Ok((sql, arguments))
}

/// Adds `value` to the arguments; its placeholder (`$n`).
fn bind_next<'q, T>(arguments: &mut PgArguments, value: T) -> Result<String, StoreError>
where
    T: 'q + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    arguments.add(value).map_err(sqlx::Error::Encode)?;
    Ok(format!("${}", arguments.len()))
}

fn contains_pattern(needle: &str) -> String {
    let escaped = needle
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The bytes of the rendered bodies of those of `ids` that exist in the tenant.
pub async fn body_bytes(pool: &PgPool, tenant: &Tenant, ids: &[Uuid]) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(octet_length(body::text)), 0)::bigint FROM audiences
         WHERE sandbox_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_one(pool)
    .await?)
}

/// The rendered bodies of those of `ids` that exist in the tenant.
pub async fn bulk_get(
    pool: &PgPool,
    tenant: &Tenant,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, body::text FROM audiences WHERE sandbox_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Whether following `dependencies` from `from` reaches `target`: a write that would close a cycle.
pub async fn reaches(
    conn: &mut PgConnection,
    tenant: &Tenant,
    from: &[Uuid],
    target: Uuid,
) -> Result<bool, StoreError> {
    let (found,): (bool,) = sqlx::query_as(
        "WITH RECURSIVE walk(id) AS (
             SELECT unnest($2::uuid[])
             UNION
             SELECT d FROM walk JOIN audiences a ON a.sandbox_id = $1 AND a.id = walk.id,
                  unnest(a.dependencies) AS d)
         SELECT EXISTS (SELECT 1 FROM walk WHERE id = $3)",
    )
    .bind(tenant.sandbox_id())
    .bind(from)
    .bind(target)
    .fetch_one(&mut *conn)
    .await?;
    Ok(found)
}
