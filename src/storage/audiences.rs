//! SQL for UPS audiences. `body` holds the rendered audience; the other columns are its
//! filterable and sortable fields, written from the same [`Audience`] in one statement.

use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::{violated_constraint, Conflict, StoreError};
use crate::{
    domain::{
        audience::{self, Audience},
        listing::{ListQuery, PropertyField},
        Tenant,
    },
    error::{ApiError, Code},
};

/// An audience as stored: its rendered JSON text and its current etag.
pub struct StoredAudience {
    pub body: String,
    pub etag: String,
}

pub async fn get(pool: &PgPool, tenant: &Tenant, id: Uuid) -> sqlx::Result<Option<StoredAudience>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT body::text, etag FROM audiences WHERE sandbox_id = $1 AND id = $2")
            .bind(tenant.sandbox_id())
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(body, etag)| StoredAudience { body, etag }))
}

/// Reads an audience and locks its row until the transaction ends, so the write that follows
/// applies to exactly this version.
pub async fn lock(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Audience>, ApiError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT body::text FROM audiences WHERE sandbox_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(body,)| parse_stored(&body)).transpose()
}

/// Locks the audiences of `ids` that exist in the tenant, FOR UPDATE, in id order (the order every
/// transaction that writes several audiences takes them in; see
/// `service::audiences::delete_cascade`). Returns the ids found.
pub async fn lock_ids(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The rows are locked as they leave the sort, so in id order.
    sqlx::query_scalar(
        "SELECT id FROM audiences WHERE sandbox_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
}

/// Reads an audience on a connection without locking it.
pub async fn read_on(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Audience>, ApiError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT body::text FROM audiences WHERE sandbox_id = $1 AND id = $2")
            .bind(tenant.sandbox_id())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(body,)| parse_stored(&body)).transpose()
}

fn parse_stored(body: &str) -> Result<Audience, ApiError> {
    let value = serde_json::from_str(body).map_err(ApiError::internal)?;
    Audience::from_body(value).map_err(ApiError::internal)
}

fn conflict_or(e: sqlx::Error, audience: &Audience) -> ApiError {
    if violated_constraint(&e) == Some("audiences_namespace_audience_id_key") {
        ApiError::new(
            Code::AudienceConflict,
            audience::key_taken_message(&audience.fields),
        )
    } else {
        e.into()
    }
}

/// Inserts a new audience; returns the rendered body. A taken (namespace, audienceId) is
/// [`Conflict::AudienceKeyTaken`].
pub async fn insert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
) -> Result<String, StoreError> {
    let body = serde_json::to_string(&audience.to_body(tenant))
        .map_err(|e| StoreError::Corrupt(e.into()))?;
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
    .map_err(|e| {
        if violated_constraint(&e) == Some("audiences_namespace_audience_id_key") {
            StoreError::Conflict(Conflict::AudienceKeyTaken)
        } else {
            e.into()
        }
    })?;
    Ok(body)
}

/// Writes a new version of a locked audience; returns the rendered body.
pub async fn update(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
) -> Result<String, ApiError> {
    update_where(conn, tenant, audience, None)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("locked audience {} vanished", audience.id))
        })
}

/// Writes a new version only if the row still has `expected_etag`; `None` when another write
/// came first (or the audience is gone).
pub async fn update_if_current(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
    expected_etag: &str,
) -> Result<Option<String>, ApiError> {
    update_where(conn, tenant, audience, Some(expected_etag)).await
}

async fn update_where(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience: &Audience,
    expected_etag: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let body = render(tenant, audience)?;
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
    .map_err(|e| conflict_or(e, audience))?;
    Ok((done.rows_affected() == 1).then_some(body))
}

/// Reads an audience without locking it; pair with [`update_if_current`].
pub async fn read(pool: &PgPool, tenant: &Tenant, id: Uuid) -> Result<Option<Audience>, ApiError> {
    match get(pool, tenant, id).await? {
        Some(stored) => parse_stored(&stored.body).map(Some),
        None => Ok(None),
    }
}

fn render(tenant: &Tenant, audience: &Audience) -> Result<String, ApiError> {
    serde_json::to_string(&audience.to_body(tenant)).map_err(ApiError::internal)
}

pub async fn delete(conn: &mut PgConnection, tenant: &Tenant, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM audiences WHERE sandbox_id = $1 AND id = $2")
        .bind(tenant.sandbox_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The lifecycle state of each of `ids` that exists in the tenant. The rows are share-locked so
/// they cannot change state or vanish before the transaction commits (writers lock them
/// FOR UPDATE beforehand with [`lock_ids`], so this takes no new lock there).
pub async fn states_of(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT id, lifecycle_state FROM audiences WHERE sandbox_id = $1 AND id = ANY($2)
         ORDER BY id FOR SHARE",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
}

/// The audiences whose expressions reference `id`, with their lifecycle states.
pub async fn dependents_of(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT id, lifecycle_state FROM audiences
         WHERE sandbox_id = $1 AND dependencies <> '{}' AND dependencies @> ARRAY[$2]::uuid[]
         ORDER BY id",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_all(&mut *conn)
    .await
}

/// Recomputes the `dependents` shown in the bodies of `ids` after a write changed who references
/// them. The `_etag` is left alone: the audience itself did not change.
pub async fn refresh_dependents(
    conn: &mut PgConnection,
    tenant: &Tenant,
    ids: &[Uuid],
) -> Result<(), ApiError> {
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
        let body = render(tenant, &audience)?;
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
}

/// Lists a page. Column names come only from the whitelists in `domain::listing`; every value is
/// a bound parameter. The page and the count are one statement, one round trip.
///
/// The page's bodies are read one by one in page order (`walk`), adding up their lengths, and the
/// walk stops at the first body that passes `q.page_bytes`: that one and the rest are left out
/// (the first body is always kept), so neither the database nor the server holds more than the
/// budget and one body, whatever `limit` says.
pub async fn list(pool: &PgPool, tenant: &Tenant, q: &ListQuery) -> sqlx::Result<Page> {
    let mut filters = String::from("sandbox_id = $1");
    let mut values: Vec<String> = Vec::new();
    let mut push = |filters: &mut String, clause: &str, value: String| {
        values.push(value);
        // $1..$4 are the sandbox, offset, limit and byte budget.
        filters.push_str(&clause.replace('?', &format!("${}", values.len() + 4)));
    };
    if q.hides_inactive() {
        filters.push_str(" AND lifecycle_state <> 'inactive'");
    }
    for p in &q.properties {
        let column = p.field.column();
        let clause = match (p.equals, p.field) {
            (true, _) => format!(" AND {column} = ?"),
            (false, PropertyField::Id) => format!(" AND {column} <> ?"),
            (false, _) => format!(" AND {column} IS DISTINCT FROM ?"),
        };
        push(&mut filters, &clause, p.value.clone());
    }
    if let Some(name) = &q.name {
        push(&mut filters, " AND name ILIKE ?", contains_pattern(name));
    }
    if let Some(description) = &q.description {
        push(
            &mut filters,
            " AND description ILIKE ?",
            contains_pattern(description),
        );
    }
    if let Some(entity_type) = &q.entity_type {
        push(&mut filters, " AND schema_name = ?", entity_type.clone());
    }
    let column = q.sort.column();
    let dir = q.direction();
    // The default listing (no filter but the hidden inactive ones) is counted from the
    // trigger-kept counters; any other filter counts the matching rows.
    let count = if q.has_filters() {
        format!("SELECT count(*) FROM audiences WHERE {filters}")
    } else {
        "SELECT coalesce(sum(n), 0)::bigint FROM audience_counts
         WHERE sandbox_id = $1 AND lifecycle_state <> 'inactive'"
            .to_owned()
    };
    let sql = format!(
        "WITH RECURSIVE page AS MATERIALIZED (
             SELECT id, {column} AS k FROM audiences WHERE {filters}
             ORDER BY {column} {dir}, id {dir} OFFSET $2 LIMIT $3),
         ordered AS MATERIALIZED (
             SELECT array_agg(id ORDER BY k {dir}, id {dir}) AS ids FROM page),
         walk (n, body, bytes) AS (
             SELECT 1, b.body, octet_length(b.body)::bigint
             FROM ordered, LATERAL (SELECT a.body::text AS body FROM audiences a
                                    WHERE a.sandbox_id = $1 AND a.id = ordered.ids[1]) b
             UNION ALL
             SELECT w.n + 1, b.body, w.bytes + 1 + octet_length(b.body)
             FROM walk w, ordered, LATERAL (SELECT a.body::text AS body FROM audiences a
                                            WHERE a.sandbox_id = $1 AND a.id = ordered.ids[w.n + 1]) b
             WHERE w.bytes <= $4),
         kept AS (SELECT n, body FROM walk WHERE n = 1 OR bytes <= $4)
         SELECT ({count}), (SELECT count(*) FROM kept),
                coalesce((SELECT string_agg(body, ',' ORDER BY n) FROM kept), '')"
    );
    let budget = i64::try_from(q.page_bytes).unwrap_or(i64::MAX);
    let mut query = sqlx::query_as::<_, (i64, i64, String)>(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(q.start)
        .bind(q.limit)
        .bind(budget);
    for v in &values {
        query = query.bind(v);
    }
    let (total, count, children) = query.fetch_one(pool).await?;
    Ok(Page {
        children,
        count,
        total,
    })
}

fn contains_pattern(needle: &str) -> String {
    let escaped = needle
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The bytes of the rendered bodies of those of `ids` that exist in the tenant.
pub async fn body_bytes(pool: &PgPool, tenant: &Tenant, ids: &[Uuid]) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(octet_length(body::text)), 0)::bigint FROM audiences
         WHERE sandbox_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.sandbox_id())
    .bind(ids)
    .fetch_one(pool)
    .await
}

/// The rendered bodies of those of `ids` that exist in the tenant.
pub async fn bulk_get(
    pool: &PgPool,
    tenant: &Tenant,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT id, body::text FROM audiences WHERE sandbox_id = $1 AND id = ANY($2)")
        .bind(tenant.sandbox_id())
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Whether following `dependencies` from `from` reaches `target`: a write that would close a cycle.
pub async fn reaches(
    conn: &mut PgConnection,
    tenant: &Tenant,
    from: &[Uuid],
    target: Uuid,
) -> sqlx::Result<bool> {
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
