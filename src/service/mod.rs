//! Use cases: each one is a transaction that combines the domain rules with storage. Storage
//! answers in data or `StoreError`; the conversions below turn what is left of its errors into
//! the client's `ApiError` (conflicts are mapped by each family before).

pub mod ais;
pub mod audiences;
pub mod control;
pub mod fixtures;
pub mod landing;
pub mod retry;

use crate::{
    error::ApiError,
    storage::{self, StoreError},
};

/// A database error reaches the client as a generic message: 503 when the database cannot serve
/// now (see `storage::is_unavailable`), 500 otherwise. Its text is logged, never sent.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if storage::is_unavailable(&e) {
            ApiError::unavailable(e)
        } else {
            ApiError::internal(e)
        }
    }
}

/// What the store could not do, as a client sees it: the database's errors as above, a stored row
/// that does not decode as a fault of ours (500). A conflict means something only to the API
/// family that met it, which maps it before this (`service::audiences::write_refused`); one that
/// reaches this conversion is a fault of ours too.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => e.into(),
            StoreError::Corrupt(e) => ApiError::internal(e),
            StoreError::Conflict(c) => ApiError::internal(anyhow::anyhow!(
                "the store's conflict {c:?} was not mapped to an answer"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::Code, storage::Conflict};

    #[test]
    fn store_errors_answer_as_the_database_and_faults_do() {
        let code = |e: StoreError| ApiError::from(e).code;
        assert_eq!(
            code(StoreError::Db(sqlx::Error::PoolTimedOut)),
            Code::Unavailable
        );
        assert_eq!(
            code(StoreError::Db(sqlx::Error::RowNotFound)),
            Code::Internal
        );
        assert_eq!(
            code(StoreError::Corrupt(anyhow::anyhow!("x"))),
            Code::Internal
        );
        // A conflict is the family's to answer; unmapped it is a fault, never a client error.
        assert_eq!(
            code(StoreError::Conflict(Conflict::AudienceKeyTaken)),
            Code::Internal
        );
        // The database's own error stays the cause, so a retry can recognise it.
        let e = ApiError::from(StoreError::Db(sqlx::Error::PoolTimedOut));
        assert!(e.source.unwrap().downcast_ref::<sqlx::Error>().is_some());
    }
}
