//! Sandboxes, registered on first use.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Sandbox;

/// The sandbox `name` of `org`, registered now if this is its first use. Concurrent first uses
/// agree on one id: the insert is a no-op when another request won.
pub async fn register(pool: &PgPool, org_id: &str, name: &str) -> sqlx::Result<Sandbox> {
    let (sandbox_type, is_default) = Sandbox::kind_for(name);
    // The statement's snapshot cannot see a row that a concurrent first use committed while this
    // insert waited on it; the second try reads it.
    for _ in 0..2 {
        let row: Option<(Uuid, String, String, bool)> = sqlx::query_as(
        "WITH inserted AS (
             INSERT INTO sandboxes (sandbox_id, org_id, name, sandbox_type, is_default)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org_id, name) DO NOTHING
             RETURNING sandbox_id, name, sandbox_type, is_default)
         SELECT sandbox_id, name, sandbox_type, is_default FROM inserted
         UNION ALL
         SELECT sandbox_id, name, sandbox_type, is_default FROM sandboxes WHERE org_id = $2 AND name = $3
         LIMIT 1",
    )
    .bind(Uuid::new_v4())
    .bind(org_id)
    .bind(name)
    .bind(sandbox_type)
    .bind(is_default)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            return Ok(Sandbox {
                sandbox_id: row.0,
                name: row.1,
                sandbox_type: row.2,
                is_default: row.3,
            });
        }
    }
    Err(sqlx::Error::RowNotFound)
}
