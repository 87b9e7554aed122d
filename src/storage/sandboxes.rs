//! Sandboxes, registered on first use, at most a set number per organisation; organisations,
//! registered with their first sandbox, at most a set number on the server.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;
use crate::domain::Sandbox;

/// What registering a sandbox name came to.
pub enum Registered {
    Sandbox(Sandbox),
    /// The name is new and the organisation already has its maximum of sandboxes.
    OrgFull,
    /// The organisation is new and the server already has its maximum of organisations.
    ServerFull,
}

/// How many tenants may be registered.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub sandboxes_per_org: i64,
    pub organisations: i64,
}

impl Caps {
    pub fn from_limits(limits: &crate::config::Limits) -> Self {
        Caps {
            sandboxes_per_org: limits.max_sandboxes_per_org,
            organisations: limits.max_organisations,
        }
    }
}

/// The key of the advisory lock under which a new organisation is counted and registered.
const NEW_ORGANISATION_LOCK: i64 = 0x6f72_6773; // "orgs"

/// The sandbox `name` of `org`, registered now if this is its first use, the organisation has
/// fewer sandboxes than its cap and, when the organisation is new, the server fewer
/// organisations than its cap. A known name costs one read. A new one is registered under a
/// transaction-scoped advisory lock on the organisation, so concurrent first uses of different
/// names are counted one after the other and cannot pass the cap together; concurrent first uses
/// of the same name agree on one id. A new organisation is counted under one more lock, taken
/// after the organisation's (always in that order), for the same reason.
pub async fn register(
    pool: &PgPool,
    org_id: &str,
    name: &str,
    caps: Caps,
) -> Result<Registered, StoreError> {
    let known = {
        let mut conn = pool.acquire().await?;
        find(&mut conn, org_id, name).await?
    };
    if let Some(sandbox) = known {
        return Ok(Registered::Sandbox(sandbox));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 8))")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    // Read again under the lock: another request may have registered it meanwhile.
    if let Some(sandbox) = find(&mut tx, org_id, name).await? {
        return Ok(Registered::Sandbox(sandbox));
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM sandboxes WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= caps.sandboxes_per_org {
        return Ok(Registered::OrgFull);
    }
    if count == 0 && !register_organisation(&mut tx, org_id, caps.organisations).await? {
        return Ok(Registered::ServerFull);
    }
    let (sandbox_type, is_default) = Sandbox::kind_for(name);
    let sandbox = Sandbox {
        sandbox_id: Uuid::new_v4(),
        name: name.to_owned(),
        sandbox_type: sandbox_type.to_owned(),
        is_default,
    };
    sqlx::query(
        "INSERT INTO sandboxes (sandbox_id, org_id, name, sandbox_type, is_default)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(sandbox.sandbox_id)
    .bind(org_id)
    .bind(name)
    .bind(sandbox_type)
    .bind(is_default)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Registered::Sandbox(sandbox))
}

/// Registers `org_id` unless the server already has `max` organisations; `false` when it has
/// and `org_id` is not among them.
async fn register_organisation(
    tx: &mut PgConnection,
    org_id: &str,
    max: i64,
) -> Result<bool, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(NEW_ORGANISATION_LOCK)
        .execute(&mut *tx)
        .await?;
    let (known, count): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM organisations WHERE org_id = $1),
                (SELECT count(*) FROM organisations)",
    )
    .bind(org_id)
    .fetch_one(&mut *tx)
    .await?;
    if known {
        return Ok(true);
    }
    if count >= max {
        return Ok(false);
    }
    sqlx::query("INSERT INTO organisations (org_id) VALUES ($1)")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    Ok(true)
}

async fn find(
    conn: &mut PgConnection,
    org_id: &str,
    name: &str,
) -> Result<Option<Sandbox>, StoreError> {
    let row: Option<(Uuid, String, String, bool)> = sqlx::query_as(
        "SELECT sandbox_id, name, sandbox_type, is_default FROM sandboxes
         WHERE org_id = $1 AND name = $2",
    )
    .bind(org_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(
        row.map(|(sandbox_id, name, sandbox_type, is_default)| Sandbox {
            sandbox_id,
            name,
            sandbox_type,
            is_default,
        }),
    )
}
