//! The step of a creation job: the UPS audience of an external audience, and the end of its
//! operation, in one transaction.

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgConnection};

use super::Worker;
use crate::{
    domain::{
        external::{self, ExternalAudience, ExternalState, OperationStatus},
        Tenant,
    },
    error::ApiError,
    storage::{
        self,
        jobs::{self, Job},
        Conflict, StoreError,
    },
};

/// How an operation ends: its status and, when it failed, the reason a tenant reads.
type Outcome = (OperationStatus, Option<String>);

impl Worker {
    /// Creates the UPS audience of an external audience and ends its operation. Lock order:
    /// job, operation, external audience, UPS audience (its insert).
    pub(super) async fn create_audience(&self, job: &Job) -> anyhow::Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(());
        }
        let tenant = self.tenant(&mut tx, job.sandbox_id).await?;
        // The sandbox's time for what it shows; the server's (`now`) for the job queue.
        let at = self.sandbox_now(job.sandbox_id).await?;
        // An operation purged meanwhile leaves nothing to do but end the job.
        if let Some(op) = storage::ais::lock_operation(&mut tx, &tenant, job.target_id).await? {
            let found = storage::ais::lock_external(&mut tx, &tenant, op.audience_id).await?;
            let (status, reason) = match found {
                None => (
                    OperationStatus::Failed,
                    Some(external::DELETED_BEFORE_CREATED.to_owned()),
                ),
                Some(ext) if ext.state == ExternalState::Ready => (OperationStatus::Success, None),
                Some(ext) => insert_ups_audience(&mut tx, &tenant, &ext, at).await?,
            };
            storage::ais::finish_operation(&mut tx, &tenant, op.id, status, reason.as_deref(), at)
                .await?;
        }
        jobs::finish(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Inserts the UPS audience of an external audience that is being created and marks it ready.
/// When its (namespace, audienceId) is taken in UPS, its reservation is released instead and
/// the operation fails saying why.
async fn insert_ups_audience(
    tx: &mut PgConnection,
    tenant: &Tenant,
    ext: &ExternalAudience,
    now: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let ups = ext.ups_audience(now)?;
    let mut savepoint = tx.begin().await?;
    match storage::audiences::insert(&mut savepoint, tenant, &ups).await {
        Ok(_) => {
            savepoint.commit().await?;
            storage::ais::mark_ready(tx, tenant, ext.id).await?;
            Ok((OperationStatus::Success, None))
        }
        Err(StoreError::Conflict(Conflict::AudienceKeyTaken)) => {
            savepoint.rollback().await?;
            storage::ais::delete_external(tx, tenant, ext.id).await?;
            let fields = &ups.fields;
            let refused = ApiError::audience_key_taken(fields.namespace(), fields.audience_id());
            Ok((OperationStatus::Failed, Some(refused.message)))
        }
        Err(e) => Err(e.into()),
    }
}
