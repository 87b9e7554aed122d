//! Black-box tests of the server over HTTP against a real PostgreSQL.

mod ais;
mod audiences;
mod conditional;
mod control;
mod deletion;
mod docs;
mod embedded;
mod foundation;
mod helpers;
mod hostile;
mod landing;
mod lifecycle;
mod listing;
mod operations;
mod tenancy;
mod worker;
