//! Log setup (text or JSON lines, filtered by `LOG_LEVEL`) and the id of the request being served,
//! which every log line and error body of that request carries.

use std::{future::Future, io::IsTerminal};

use rand::{distr::Alphanumeric, Rng};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests start many servers in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `serve` as the request `id`: [`request_id`] answers `id` inside it.
pub async fn with_request_id<F: Future>(id: String, serve: F) -> F::Output {
    REQUEST_ID.scope(id, serve).await
}

/// The id of the request being served (a fresh one outside a request).
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

/// A new request id: 32 alphanumerics, as Adobe's are.
pub fn new_request_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}
