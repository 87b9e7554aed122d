//! Prometheus metrics: one recorder per server (not the process-wide one, so several servers in
//! one test process keep separate counts), fed by the request middleware, the worker and the
//! `/metrics` handler. Every metric name, label and bucket is declared here; docs/OPERATIONS.md
//! says what each one means.

use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use sqlx::PgPool;

use crate::{domain::job::JobKind, storage::jobs::JobStats};

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
pub const POOL_MAX: &str = "db_pool_max_connections";
pub const POOL_ACQUIRE: &str = "db_pool_acquire_probe_seconds";
pub const DATABASE_UP: &str = "audience_database_up";
pub const JOBS: &str = "audience_jobs";
pub const OLDEST_DUE_JOB: &str = "audience_oldest_due_job_age_seconds";
pub const JOB_STEPS: &str = "audience_job_steps_total";
pub const STAGE_DURATION: &str = "audience_run_stage_duration_seconds";
pub const ROWS_INGESTED: &str = "audience_ingested_rows_total";
pub const ERRORS: &str = "audience_errors_total";

/// The route label of a request no route matched: raw paths never become labels.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// What one finished job step came to, as the `outcome` label of [`JOB_STEPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step committed (or found nothing left to do).
    Done,
    /// The step failed and the job was released for a later attempt.
    Retry,
    /// The step failed for the last time: the operation or run is FAILED.
    GaveUp,
    /// This process shut down during the step and handed the job back.
    Released,
}

impl StepOutcome {
    fn label(self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::Retry => "retry",
            StepOutcome::GaveUp => "failed",
            StepOutcome::Released => "released",
        }
    }
}

pub struct Monitoring {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitoring")
    }
}

/// Request latencies from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Run stages from 10 ms to 30 min.
const STAGE_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];

impl Monitoring {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STAGE_DURATION.into()), STAGE_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let monitoring = Monitoring { recorder, handle };
        monitoring.record(describe_all);
        Arc::new(monitoring)
    }

    fn record(&self, f: impl FnOnce()) {
        metrics::with_local_recorder(&self.recorder, f);
    }

    /// One answered HTTP request. `route` is the route template (or [`UNMATCHED_ROUTE`]).
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let (route, method) = (route.to_owned(), method_label(method));
        self.record(|| {
            counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
                .increment(1);
            histogram!(HTTP_DURATION, "route" => route, "method" => method).record(seconds);
        });
    }

    /// One error answer, by its wire code (the code table in `src/error.rs`).
    pub fn error(&self, wire: &'static str, status: u16) {
        self.record(|| {
            counter!(ERRORS, "code" => wire, "status" => status.to_string()).increment(1)
        });
    }

    pub fn job_step(&self, kind: &str, step: &str, outcome: StepOutcome) {
        let (kind, step) = (kind.to_owned(), step.to_owned());
        self.record(|| {
            counter!(JOB_STEPS, "kind" => kind, "step" => step, "outcome" => outcome.label())
                .increment(1)
        });
    }

    /// A run stage that ended, with its status (`SUCCESS` or `FAILED`).
    pub fn stage(&self, stage: &'static str, status: &'static str, seconds: f64) {
        self.record(|| {
            histogram!(STAGE_DURATION, "stage" => stage, "status" => status).record(seconds)
        });
    }

    /// Rows a committed DATASET_INGEST read: good ones and rejected ones.
    pub fn rows_ingested(&self, good: u64, bad: u64) {
        self.record(|| {
            counter!(ROWS_INGESTED, "result" => "good").increment(good);
            counter!(ROWS_INGESTED, "result" => "bad").increment(bad);
        });
    }

    /// The pool as sqlx reports it, and how long the scrape's own acquisition of a connection
    /// waited (sqlx does not count waiting tasks; a pool with room answers at once, an exhausted
    /// one makes the probe wait, up to its timeout).
    pub fn pool(&self, pool: &PgPool, acquire_seconds: f64) {
        let size = pool.size() as f64;
        let idle = pool.num_idle() as f64;
        let max = pool.options().get_max_connections() as f64;
        self.record(|| {
            gauge!(POOL_CONNECTIONS, "state" => "open").set(size);
            gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle);
            gauge!(POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
            gauge!(POOL_MAX).set(max);
            gauge!(POOL_ACQUIRE).set(acquire_seconds);
        });
    }

    /// The queue as the database holds it (the same numbers on every replica).
    pub fn jobs(&self, stats: Option<&[JobStats]>) {
        self.record(|| {
            let Some(stats) = stats else {
                gauge!(DATABASE_UP).set(0.0);
                return;
            };
            gauge!(DATABASE_UP).set(1.0);
            let mut oldest = 0.0f64;
            for kind in JobKind::ALL.iter().copied() {
                let s = stats.iter().find(|s| s.kind == kind);
                let kind = kind.as_str();
                let get = |f: fn(&JobStats) -> i64| s.map(f).unwrap_or(0) as f64;
                gauge!(JOBS, "kind" => kind, "state" => "queued").set(get(|s| s.queued));
                gauge!(JOBS, "kind" => kind, "state" => "running").set(get(|s| s.running));
                gauge!(JOBS, "kind" => kind, "state" => "retrying").set(get(|s| s.retrying));
                oldest = oldest.max(s.map(|s| s.oldest_due_secs).unwrap_or(0.0));
            }
            gauge!(OLDEST_DUE_JOB).set(oldest);
        });
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Keeps histograms from growing between scrapes; the server calls it every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Methods outside the standard set share one label, so a client cannot invent label values.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

fn describe_all() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time from receiving a request to its answer, by route template and method."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Database connections of this server's pool: open, idle, in_use."
    );
    describe_gauge!(POOL_MAX, "The pool's maximum connections (DB_POOL_SIZE).");
    describe_gauge!(POOL_ACQUIRE, metrics::Unit::Seconds, "How long the last scrape waited for a pool connection: near 0 while the pool has room, up to 1 when requests queue for connections.");
    describe_gauge!(
        DATABASE_UP,
        "1 when the last scrape could read the job queue from the database, else 0."
    );
    describe_gauge!(JOBS, "Open jobs in the database by kind and state: queued (due, unclaimed), running (claimed under a live lease), retrying (waiting for their backoff).");
    describe_gauge!(
        OLDEST_DUE_JOB,
        metrics::Unit::Seconds,
        "How long the oldest due, unclaimed job has been due (0 when none)."
    );
    describe_counter!(JOB_STEPS, "Job steps this server's worker ended, by kind, step and outcome (done, retry, failed, released).");
    describe_histogram!(
        STAGE_DURATION,
        metrics::Unit::Seconds,
        "Duration of ingestion run stages carried out by this server, by stage and status."
    );
    describe_counter!(
        ROWS_INGESTED,
        "CSV rows read by committed DATASET_INGEST stages of this server, good and bad."
    );
    describe_counter!(
        ERRORS,
        "Error answers by wire code (the code table) and status."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "OTHER");
    }

    #[test]
    fn counters_are_rendered_with_their_labels_and_help() {
        let m = Monitoring::new();
        m.http_request("/data/core/ups/audiences/{id}", "GET", 200, 0.003);
        m.http_request("/data/core/ups/audiences/{id}", "GET", 200, 0.004);
        m.error("UPAPI-113430-404", 404);
        let text = m.render();
        assert!(text.contains(
            "http_requests_total{route=\"/data/core/ups/audiences/{id}\",method=\"GET\",status=\"200\"} 2"
        ), "{text}");
        assert!(text.contains("# HELP http_requests_total"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{route=\"/data/core/ups/audiences/{id}\",method=\"GET\",le=\"0.005\"} 2"), "{text}");
        assert!(
            text.contains("audience_errors_total{code=\"UPAPI-113430-404\",status=\"404\"} 1"),
            "{text}"
        );
    }
}
