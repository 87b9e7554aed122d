//! Black-box tests of the server over HTTP against a real PostgreSQL.

mod audiences;
mod docs;
mod foundation;
mod helpers;
