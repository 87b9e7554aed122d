//! Types and rules of the service. Knows neither HTTP nor SQL.

pub mod audience;
pub mod clock;
pub mod external;
pub mod identity;
pub mod landing;
pub mod lifecycle;
pub mod limits;
pub mod listing;
pub mod patch;

pub use identity::{Caller, Sandbox, Tenant};
