//! Black-box tests of the server over HTTP against a real PostgreSQL.

mod ais;
mod audiences;
mod foundation;
mod helpers;
mod worker;
