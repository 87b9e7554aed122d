//! Transactions the database aborted for a deadlock (40P01) or a serialization failure (40001)
//! are run again, whole, a few times; when that does not help the answer is a 503 (real
//! overload, which clients retry), never a 500. With one lock order (see
//! `service::audiences::delete_cascade`) deadlocks should not happen at all: this is the net.

use std::{future::Future, time::Duration};

use crate::{
    error::{ApiError, Code},
    storage,
};

/// Runs of one transaction at most.
pub const ATTEMPTS: u32 = 4;

/// Runs `attempt` (one whole transaction) until it is not aborted by a conflict, at most
/// [`ATTEMPTS`] times.
pub async fn on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut run = 1;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) => {
                if run >= ATTEMPTS {
                    return Err(busy(e.source));
                }
                tracing::info!(run, error = %e.source.as_ref().map(|s| s.to_string()).unwrap_or_default(), "transaction conflict, running it again");
                // A short, growing pause lets the transaction that won finish first.
                tokio::time::sleep(Duration::from_millis(5 * u64::from(run))).await;
                run += 1;
            }
            other => return other,
        }
    }
}

fn is_conflict(e: &ApiError) -> bool {
    e.source
        .as_ref()
        .and_then(|s| s.downcast_ref::<sqlx::Error>())
        .is_some_and(storage::is_retryable_conflict)
}

/// The answer when concurrent writers kept a write from going through.
pub fn busy(source: Option<anyhow::Error>) -> ApiError {
    ApiError {
        code: Code::Unavailable,
        message: "Other requests are changing the same audiences right now. Try again.".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn other_errors_are_not_retried_and_successes_pass_through() {
        let mut runs = 0;
        let out: Result<(), ApiError> = on_conflict(|| {
            runs += 1;
            async { Err(ApiError::invalid("no")) }
        })
        .await;
        assert_eq!(out.unwrap_err().code, Code::AudienceInvalid);
        assert_eq!(runs, 1);
        let out = on_conflict(|| async { Ok::<_, ApiError>(7) }).await;
        assert_eq!(out.unwrap(), 7);
    }
}
