//! Use cases: each one is a transaction that combines the domain rules with storage.

pub mod ais;
pub mod audiences;
pub mod landing;
pub mod retry;
