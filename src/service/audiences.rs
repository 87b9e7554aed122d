//! UPS audience use cases: each turns a parsed request into the domain's rules and storage calls,
//! and the store's answers into the UPS family's errors (`write_refused`). Every write is one
//! transaction, or one statement: a create that references no other audience is a single insert;
//! a PUT or PATCH that touches only its own audience is written only where the row still has the
//! etag it was computed from (a lost race reads again, see `update_with`); writes that involve
//! other audiences lock every row they check, in one order (see `delete_cascade`), and check the
//! rules against what they locked.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    config::Limits,
    domain::{
        audience::{self, Audience, ClientFields},
        clock::Clock,
        cursor::{Cursor, SortKey},
        external::ExternalState,
        lifecycle::Lifecycle,
        limits::check_chars,
        listing::ListQuery,
        Caller, Tenant,
    },
    error::{ApiError, Code},
    storage::{self, audiences::StoredAudience, Conflict, StoreError},
};

use super::retry;

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    fn check(&self, current_etag: &str) -> Result<(), ApiError> {
        match self {
            IfMatch::Any => Ok(()),
            IfMatch::Tags(tags) if tags.iter().any(|t| t == current_etag) => Ok(()),
            IfMatch::Tags(_) => Err(ApiError::new(
                Code::PreconditionFailed,
                "The If-Match header does not match the audience's current _etag. Read it again and retry.",
            )),
        }
    }
}

/// The outcome of a write: the rendered audience and its new etag.
pub struct Written {
    pub body: String,
    pub etag: String,
}

/// The UPS answer to a write of `audience` the store refused: a taken (namespace, audienceId) is
/// 409; anything else is the database's (503 or 500, see `ApiError`'s conversions).
pub(crate) fn write_refused(e: StoreError, audience: &Audience) -> ApiError {
    match e {
        StoreError::Conflict(Conflict::AudienceKeyTaken) => {
            ApiError::audience_key_taken(audience.fields.namespace(), audience.fields.audience_id())
        }
        other => other.into(),
    }
}

/// Ids in paths are the audience's `id`; anything that is not one of ours cannot exist.
fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::audience_not_found(id))
}

pub async fn get(pool: &PgPool, tenant: &Tenant, id: &str) -> Result<StoredAudience, ApiError> {
    let uuid = parse_id(id)?;
    storage::audiences::get(pool, tenant, uuid)
        .await?
        .ok_or_else(|| ApiError::audience_not_found(id))
}

pub async fn create(
    pool: &PgPool,
    limits: &Limits,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    body: Value,
) -> Result<Written, ApiError> {
    let id = Uuid::new_v4();
    let fields = audience::new_fields(body, id)?;
    fields.check_bounds(limits)?;
    if !fields.has_references() {
        // Nothing else to read or update: the insert alone is the transaction.
        let created = Audience::create(id, fields, caller, Vec::new(), clock.now());
        let mut conn = pool.acquire().await?;
        let body = storage::audiences::insert(&mut conn, tenant, &created)
            .await
            .map_err(|e| write_refused(e, &created))?;
        return Ok(Written {
            body,
            etag: created.etag,
        });
    }
    retry::on_conflict(|| create_referencing(pool, clock, tenant, caller, id, fields.clone())).await
}

/// A create whose expression references other audiences: they are locked FOR UPDATE in id order
/// before anything is checked, so two writes that reference one parent queue on it (instead of
/// both share-locking it and deadlocking when each upgrades to refresh its `dependents`).
async fn create_referencing(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: Uuid,
    fields: ClientFields,
) -> Result<Written, ApiError> {
    let mut tx = pool.begin().await?;
    storage::audiences::lock_ids(&mut tx, tenant, &referenced_ids(&fields)).await?;
    let dependencies = resolve_dependencies(&mut tx, tenant, id, &fields).await?;
    let created = Audience::create(id, fields, caller, dependencies, clock.now());
    let body = storage::audiences::insert(&mut tx, tenant, &created)
        .await
        .map_err(|e| write_refused(e, &created))?;
    storage::audiences::refresh_dependents(&mut tx, tenant, &created.dependencies).await?;
    tx.commit().await?;
    Ok(Written {
        body,
        etag: created.etag,
    })
}

/// The ids among the audiences an expression references (anything else is refused later).
fn referenced_ids(fields: &ClientFields) -> Vec<Uuid> {
    fields
        .expression_value()
        .map(audience::referenced_audiences)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| Uuid::parse_str(r).ok())
        .collect()
}

/// The audiences a write of `fields` over `current` locks: itself, those it references now and
/// those it will reference, sorted by id.
fn rows_to_lock(current: &Audience, fields: &ClientFields) -> Vec<Uuid> {
    let mut ids = vec![current.id];
    ids.extend(current.dependencies.iter().copied());
    ids.extend(referenced_ids(fields));
    ids.sort();
    ids.dedup();
    ids
}

#[allow(clippy::too_many_arguments)]
pub async fn replace(
    pool: &PgPool,
    limits: &Limits,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    if_match: Option<IfMatch>,
    body: Value,
) -> Result<Written, ApiError> {
    update_with(pool, clock, tenant, caller, id, if_match, |current| {
        audience::replaced_fields(current, body.clone(), limits)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    pool: &PgPool,
    limits: &Limits,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    if_match: Option<IfMatch>,
    ops: Value,
) -> Result<Written, ApiError> {
    update_with(pool, clock, tenant, caller, id, if_match, |current| {
        audience::patched_fields(current, tenant, ops.clone(), limits)
    })
    .await
}

/// How often a write that lost a race with another writer is retried before giving up.
const OPTIMISTIC_ATTEMPTS: usize = 32;

/// The shared path of PUT and PATCH. Most writes touch only the audience itself: they read it,
/// compute the new version and write it only if the row still has the etag they read (the
/// database decides; a lost race re-reads and applies the change again, so no update is lost).
/// Writes that involve other audiences (references, deactivation) lock the rows they check.
async fn update_with(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    if_match: Option<IfMatch>,
    change: impl Fn(&Audience) -> Result<ClientFields, ApiError>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let current = storage::audiences::read(pool, tenant, uuid)
            .await?
            .ok_or_else(|| ApiError::audience_not_found(id))?;
        if let Some(precondition) = &if_match {
            precondition.check(&current.etag)?;
        }
        let fields = change(&current)?;
        let involves_others = fields.has_references()
            || !current.dependencies.is_empty()
            || (fields.lifecycle == Lifecycle::Inactive
                && current.fields.lifecycle != Lifecycle::Inactive);
        if involves_others {
            return update_locked(pool, clock, tenant, caller, id, if_match, change).await;
        }
        let updated = current.updated(fields, caller, Vec::new(), clock.now());
        let mut conn = pool.acquire().await?;
        let written =
            storage::audiences::update_if_current(&mut conn, tenant, &updated, &current.etag)
                .await
                .map_err(|e| write_refused(e, &updated))?;
        if let Some(body) = written {
            return Ok(Written {
                body,
                etag: updated.etag,
            });
        }
    }
    // Under extreme contention, fall back to waiting for the row lock.
    update_locked(pool, clock, tenant, caller, id, if_match, change).await
}

/// The locking path: the audience, those it references and those it will reference are locked
/// FOR UPDATE, together, in id order (see [`delete_cascade`] for the one lock order), so the rules
/// about other audiences are checked against exactly what is committed with the write.
async fn update_locked(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    if_match: Option<IfMatch>,
    change: impl Fn(&Audience) -> Result<ClientFields, ApiError>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let change = &change;
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let written = retry::on_conflict(|| {
            update_locked_once(
                pool,
                clock,
                tenant,
                caller,
                id,
                uuid,
                if_match.as_ref(),
                change,
            )
        })
        .await?;
        if let Some(written) = written {
            return Ok(written);
        }
    }
    Err(retry::busy(None))
}

/// One try of [`update_locked`]; `None` when the audience changed between the read that chose
/// the rows to lock and the lock, so that the write now needs other rows: read again.
#[allow(clippy::too_many_arguments)]
async fn update_locked_once(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    uuid: Uuid,
    if_match: Option<&IfMatch>,
    change: &impl Fn(&Audience) -> Result<ClientFields, ApiError>,
) -> Result<Option<Written>, ApiError> {
    let seen = storage::audiences::read(pool, tenant, uuid)
        .await?
        .ok_or_else(|| ApiError::audience_not_found(id))?;
    if let Some(precondition) = if_match {
        precondition.check(&seen.etag)?;
    }
    let wanted = rows_to_lock(&seen, &change(&seen)?);
    let mut tx = pool.begin().await?;
    storage::audiences::lock_ids(&mut tx, tenant, &wanted).await?;
    let current = storage::audiences::lock(&mut tx, tenant, uuid)
        .await?
        .ok_or_else(|| ApiError::audience_not_found(id))?;
    if let Some(precondition) = if_match {
        precondition.check(&current.etag)?;
    }
    let fields = change(&current)?;
    if !rows_to_lock(&current, &fields)
        .iter()
        .all(|x| wanted.contains(x))
    {
        return Ok(None);
    }
    let dependencies = resolve_dependencies(&mut tx, tenant, uuid, &fields).await?;
    if fields.lifecycle == Lifecycle::Inactive && current.fields.lifecycle != Lifecycle::Inactive {
        ensure_no_live_dependents(&mut tx, tenant, uuid, "deactivated").await?;
    }
    let updated = current.updated(fields, caller, dependencies, clock.now());
    let body = storage::audiences::update(&mut tx, tenant, &updated)
        .await
        .map_err(|e| write_refused(e, &updated))?;
    let changed: Vec<Uuid> = symmetric_difference(&current.dependencies, &updated.dependencies);
    storage::audiences::refresh_dependents(&mut tx, tenant, &changed).await?;
    tx.commit().await?;
    Ok(Some(Written {
        body,
        etag: updated.etag,
    }))
}

pub async fn delete(
    pool: &PgPool,
    tenant: &Tenant,
    id: &str,
    if_match: Option<IfMatch>,
) -> Result<(), ApiError> {
    let uuid = parse_id(id)?;
    match delete_cascade(pool, tenant, uuid, DeleteVia::Ups(if_match.as_ref())).await? {
        true => Ok(()),
        false => Err(ApiError::audience_not_found(id)),
    }
}

/// Which family asked for a delete: the audience must exist there.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeleteVia<'a> {
    /// `DELETE /audiences/{id}`: the UPS audience must exist; `If-Match` is checked on it.
    Ups(Option<&'a IfMatch>),
    /// `DELETE /external-audience/{id}`: the external audience must exist and be ready.
    Ais,
}

/// Deletes an audience and, when it was created through AIS, its external audience and runs, in
/// one transaction. Both deletes (UPS and AIS) call this. `false` when there is nothing to delete
/// in the asking family. The bulk rows (members, staged identities) are left to the worker's
/// maintenance sweep, so the transaction is never sized by a file.
///
/// **The lock order.** Every path that touches an audience and its external audience takes its
/// row locks in this order, skipping what it does not need:
///  1. the job (`ais_jobs`), held by a worker's step;
///  2. the creation operation (`ais_operations`);
///  3. the external audience (`external_audiences`);
///  4. UPS audiences (`audiences`): every one the transaction writes, FOR UPDATE, together, in
///     id order ([`storage::audiences::lock_ids`]);
///  5. runs (`ais_runs`).
///
/// Here: 3, then 4 (the audience and the audiences it references, whose `dependents` change),
/// then 5 (deleted with the external audience). AIS PATCH: 3, 4. Run creation: 3, then the
/// sandbox's run lock, then inserts. UPS create and update: 4. The worker: audience creation 1,
/// 2, 3, 4; the profile step's batches 1, its switch 1, 3, 4, 5; TTL expiry 3, 4 (staging takes
/// no lock).
/// Written down in docs/AIS.md too.
pub(crate) async fn delete_cascade(
    pool: &PgPool,
    tenant: &Tenant,
    id: Uuid,
    via: DeleteVia<'_>,
) -> Result<bool, ApiError> {
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let deleted = retry::on_conflict(|| delete_cascade_once(pool, tenant, id, via)).await?;
        if let Some(deleted) = deleted {
            return Ok(deleted);
        }
    }
    Err(retry::busy(None))
}

/// One try of [`delete_cascade`]; `None` when the audience's references changed between the read
/// that chose the rows to lock and the lock: read again.
async fn delete_cascade_once(
    pool: &PgPool,
    tenant: &Tenant,
    id: Uuid,
    via: DeleteVia<'_>,
) -> Result<Option<bool>, ApiError> {
    let mut tx = pool.begin().await?;
    // 3. The external audience, if the audience has one.
    let external = storage::ais::lock_external(&mut tx, tenant, id).await?;
    if matches!(via, DeleteVia::Ais)
        && external
            .as_ref()
            .is_none_or(|e| e.state != ExternalState::Ready)
    {
        return Ok(Some(false));
    }
    // 4. The audience and the audiences it references, in id order.
    let mut deleted_ups = false;
    if let Some(seen) = storage::audiences::read(&mut *tx, tenant, id).await? {
        let mut wanted = seen.dependencies.clone();
        wanted.push(id);
        wanted.sort();
        wanted.dedup();
        storage::audiences::lock_ids(&mut tx, tenant, &wanted).await?;
        if let Some(current) = storage::audiences::lock(&mut tx, tenant, id).await? {
            if !current.dependencies.iter().all(|d| wanted.contains(d)) {
                return Ok(None);
            }
            if let DeleteVia::Ups(Some(precondition)) = via {
                precondition.check(&current.etag)?;
            }
            ensure_no_live_dependents(&mut tx, tenant, id, "deleted").await?;
            storage::audiences::delete(&mut tx, tenant, id).await?;
            storage::audiences::refresh_dependents(&mut tx, tenant, &current.dependencies).await?;
            deleted_ups = true;
        }
    }
    if matches!(via, DeleteVia::Ups(_)) && !deleted_ups {
        return Ok(Some(false));
    }
    // 5. The runs go with the external audience.
    if external.is_some() {
        storage::ais::delete_external(&mut tx, tenant, id).await?;
    }
    tx.commit().await?;
    Ok(Some(true))
}

/// The audiences named by `inSegment(..)` in the expression: each must exist in the tenant, not
/// lead back to this audience, and be published when this one is.
async fn resolve_dependencies(
    conn: &mut PgConnection,
    tenant: &Tenant,
    self_id: Uuid,
    fields: &ClientFields,
) -> Result<Vec<Uuid>, ApiError> {
    let Some(expression) = fields.expression_value() else {
        return Ok(Vec::new());
    };
    let referenced = audience::referenced_audiences(expression);
    if referenced.is_empty() {
        return Ok(Vec::new());
    }
    let unknown = |r: &str| {
        ApiError::invalid(format!(
            "Field 'expression' references audience '{r}', which does not exist in this sandbox."
        ))
    };
    let mut ids = Vec::with_capacity(referenced.len());
    for r in &referenced {
        let id = Uuid::parse_str(r).map_err(|_| unknown(r))?;
        if id == self_id {
            return Err(ApiError::invalid(
                "Field 'expression' references the audience itself.",
            ));
        }
        ids.push(id);
    }
    let states = storage::audiences::lock_states(conn, tenant, &ids).await?;
    for (r, id) in referenced.iter().zip(&ids) {
        let Some((_, state)) = states.iter().find(|(found, _)| found == id) else {
            return Err(unknown(r));
        };
        if fields.lifecycle == Lifecycle::Published && *state != Lifecycle::Published {
            return Err(ApiError::invalid(format!(
                "The audience cannot be published: it depends on audience '{r}', which is {state}."
            )));
        }
    }
    if storage::audiences::reaches(conn, tenant, &ids, self_id).await? {
        return Err(ApiError::invalid(
            "Field 'expression' would make audiences depend on each other in a cycle.",
        ));
    }
    Ok(ids)
}

pub(crate) async fn ensure_no_live_dependents(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    action: &str,
) -> Result<(), ApiError> {
    let live: Vec<String> = storage::audiences::dependents_of(conn, tenant, id)
        .await?
        .into_iter()
        .filter(|(_, state)| *state != Lifecycle::Inactive)
        .map(|(dependent, _)| dependent.to_string())
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        Code::HasDependents,
        format!(
            "The audience {id} cannot be {action}: audiences {} depend on it. Deactivate or delete them first.",
            live.join(", ")
        ),
    ))
}

fn symmetric_difference(a: &[Uuid], b: &[Uuid]) -> Vec<Uuid> {
    a.iter()
        .filter(|x| !b.contains(x))
        .chain(b.iter().filter(|x| !a.contains(x)))
        .copied()
        .collect()
}

/// A page of the list, and the cursor of the page after it when there is one. A cursor sent
/// with the query must be one this server made for this listing and this `start`; the page
/// then starts right after the position it holds (a keyset read, as cheap deep in the list as
/// at its head) instead of skipping `start` audiences.
pub async fn list(
    pool: &PgPool,
    secret: &[u8],
    tenant: &Tenant,
    q: &ListQuery,
) -> Result<Listed, ApiError> {
    let scope = q.cursor_scope(&tenant.sandbox_id().to_string());
    let after = match &q.cursor {
        Some(token) => {
            let cursor = Cursor::open(token, secret, &scope)?;
            let kind_fits = matches!(cursor.key, SortKey::Int(_)) == q.sort.is_integer();
            if cursor.start != q.start || !kind_fits {
                return Err(ApiError::bad_param(
                    "cursor",
                    format!(
                        "belongs to the page at start={}, not start={}; follow `_links.next.href` as it was sent",
                        cursor.start, q.start
                    ),
                ));
            }
            Some(cursor)
        }
        None => None,
    };
    let page = storage::audiences::list(pool, tenant, q, after.as_ref()).await?;
    let next = q.start + page.count;
    let next_cursor = match (&page.last, page.count > 0 && next < page.total) {
        (Some((key, id)), true) => Some(
            Cursor {
                start: next,
                key: key.clone(),
                id: *id,
            }
            .seal(secret, &scope),
        ),
        _ => None,
    };
    Ok(Listed { page, next_cursor })
}

/// A list page and the cursor of the next one.
pub struct Listed {
    pub page: storage::audiences::Page,
    pub next_cursor: Option<String>,
}

/// The ids of a bulk-get body: `{"ids": [{"id": ".."}]}` or `{"ids": [".."]}`, 1 to 100 of them,
/// each at most `MAX_ID_CHARS` long (they are echoed in the answer).
pub fn bulk_get_ids(body: &Value, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let Some(items) = body.get("ids").and_then(Value::as_array) else {
        return Err(ApiError::bad_body(
            "Field 'ids' is required and must be an array of ids or of {\"id\": ...} objects.",
        ));
    };
    if items.is_empty() || items.len() > 100 {
        return Err(ApiError::new(
            Code::BulkGetSize,
            format!(
                "Field 'ids' must hold 1 to 100 ids; it holds {}.",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let id = item
                .as_str()
                .or_else(|| item.get("id").and_then(Value::as_str))
                .ok_or_else(|| {
                    ApiError::bad_body(
                        "Each entry of 'ids' must be a string or an object {\"id\": \"...\"}.",
                    )
                })?;
            check_chars(&format!("ids[{i}]"), id, limits.max_id_chars).map_err(ApiError::limit)?;
            Ok(id.to_owned())
        })
        .collect()
}

/// Found audiences by id, as rendered bodies. The answer holds every audience asked for or none:
/// when they would pass the byte budget of a list page (`MAX_LIST_PAGE_BYTES`) the call is refused
/// before any body is read, so the client can ask for fewer at once.
pub async fn bulk_get(
    pool: &PgPool,
    limits: &Limits,
    tenant: &Tenant,
    ids: &[String],
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let uuids: Vec<Uuid> = ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect();
    let bytes = storage::audiences::body_bytes(pool, tenant, &uuids).await?;
    if usize::try_from(bytes).unwrap_or(usize::MAX) > limits.max_list_page_bytes {
        return Err(ApiError::limit(format!(
            "Field 'ids': the audiences asked for are {bytes} bytes of JSON; at most {} are sent at once. Ask for fewer ids per call.",
            limits.max_list_page_bytes
        )));
    }
    let found = storage::audiences::bulk_get(pool, tenant, &uuids).await?;
    Ok(ids
        .iter()
        .map(|requested| {
            let body = Uuid::parse_str(requested)
                .ok()
                .and_then(|u| found.iter().find(|(id, _)| *id == u))
                .map(|(_, body)| body.clone());
            (requested.clone(), body)
        })
        .collect())
}
