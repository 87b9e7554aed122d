//! The composition root: database, migrations, HTTP server. `main` and the tests both build the
//! server here; tests bind port 0.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpResponse, HttpServer};
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};
use utoipa_actix_web::AppExt;

use crate::{
    api::health::Lifecycle,
    api::{self, context, AppState},
    auth::AuthConfig,
    config::Settings,
    embedded_pg::{self, EmbeddedPostgres},
    monitoring::Monitoring,
    openapi,
    service::{
        ais::AisConfig,
        landing::{LandingConfig, Limits},
    },
    storage,
    worker::{Worker, WorkerConfig},
};

pub struct Application {
    port: u16,
    server: Server,
    pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
    /// The background worker's stop signal, task and own pool, when this process runs one.
    worker: Option<(watch::Sender<bool>, JoinHandle<()>, PgPool)>,
    lifecycle: Arc<Lifecycle>,
    monitoring: Arc<Monitoring>,
    /// Set to start the same graceful shutdown as SIGTERM (tests use it).
    shutdown: watch::Sender<bool>,
    upkeep: JoinHandle<()>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    /// A second handle on the listening socket, to refuse new connections while draining.
    listener: TcpListener,
}

/// Starts the graceful shutdown of an [`Application`], as SIGTERM does.
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shut_down(&self) {
        self.0.send_replace(true);
    }
}

/// Connects to `DATABASE_URL`, or starts the embedded PostgreSQL and creates its database.
pub async fn database(settings: &Settings) -> anyhow::Result<(PgPool, Option<EmbeddedPostgres>)> {
    if let Some(url) = &settings.database_url {
        let pool = storage::connect_with(
            url,
            settings.db_pool_size,
            &settings.db_timeouts,
            settings.db_statement_cache,
        )
        .await?;
        return Ok((pool, None));
    }
    let data_dir = settings.data_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir)).await??;
    let admin = storage::connect(&pg.admin_url(), 1, &settings.db_timeouts).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(embedded_pg::DATABASE_NAME)
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            embedded_pg::DATABASE_NAME
        )))
        .execute(&admin)
        .await?;
    }
    admin.close().await;
    tracing::info!(url = %pg.url(), "using the embedded PostgreSQL");
    let pool = storage::connect_with(
        &pg.url(),
        settings.db_pool_size,
        &settings.db_timeouts,
        settings.db_statement_cache,
    )
    .await?;
    Ok((pool, Some(pg)))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let (pool, embedded) = database(&settings).await?;
        if settings.migrate_on_start {
            storage::migrate(&pool).await?;
        } else {
            tracing::info!(
                "MIGRATE_ON_START is off: /ready answers 503 until the migrations are applied"
            );
        }
        load_fixtures(&settings, &pool).await?;
        Self::with_pool(settings, pool, embedded)
    }

    /// Builds the server on an already migrated pool.
    pub fn with_pool(
        settings: Settings,
        pool: PgPool,
        embedded: Option<EmbeddedPostgres>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        if let Some(warning) = settings.open_mode_warning() {
            tracing::warn!("{warning}");
        }
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))?;
        let port = listener.local_addr()?.port();
        let landing = LandingConfig {
            clock: settings.clock.clone(),
            public_url: settings.public_url(port),
            root: settings.landing_dir(),
            ttl_days: settings.landing_ttl_days,
            limits: Limits {
                max_blob_bytes: settings.landing_max_blob_bytes,
                max_zone_bytes: settings.landing_max_zone_bytes,
                max_files: settings.landing_max_files,
            },
        };
        let listener_copy = listener.try_clone()?;
        let monitoring = Monitoring::new();
        let lifecycle = Arc::new(Lifecycle::default());
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            auth: AuthConfig::from_settings(&settings),
            sandboxes: Default::default(),
            openapi_json: openapi::document_json(),
            clock: settings.clock.clone(),
            ais: AisConfig {
                clock: settings.clock.clone(),
                runs_per_sandbox_per_day: settings.runs_per_sandbox_per_day,
                runs_per_audience: settings.runs_per_audience,
                limits: settings.limits.clone(),
            },
            limits: settings.limits.clone(),
            shares: crate::api::share::Shares::new(
                settings.limits.tenant_bytes_per_sec,
                settings.limits.tenant_burst_bytes,
            ),
            landing,
            landing_keys: Default::default(),
            monitoring: monitoring.clone(),
            metrics_token: settings.metrics_token.clone(),
            lifecycle: lifecycle.clone(),
            control: settings.control_enabled().then(|| api::control::Control {
                token: settings.control_token.clone(),
                drain_max_secs: settings.control_drain_max_secs,
                drains: tokio::sync::Semaphore::new(settings.control_max_concurrent_drains),
                max_clock_offset_days: settings.control_max_clock_offset_days,
                max_faults: settings.control_max_faults,
                export_max_bytes: settings.control_export_max_bytes,
                worker: Worker::new(pool.clone(), control_worker_config(&settings))
                    .with_monitoring(monitoring.clone()),
                faulted: Default::default(),
                fault_refresh: Duration::from_millis(settings.control_fault_refresh_ms),
            }),
        });
        let state_for_upkeep = state.clone();
        let body_limit = settings.limits.max_body_bytes;
        let mut server = HttpServer::new(move || {
            let (app, _) = App::new()
                .into_utoipa_app()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .configure(api::configure)
                .split_for_parts();
            app.route(api::docs::OPENAPI_PATH, web::get().to(serve_openapi))
                .route("/docs", web::get().to(api::docs::redirect_to_docs))
                .service(api::docs::swagger_ui())
                .configure(api::blob::configure)
                .default_service(web::to(api::unmatched))
                .wrap(from_fn(context::normalize_path))
                .wrap(from_fn(context::request_context))
        })
        .listen(listener)?
        // Signals are handled in `run_until_stopped`, which drains in order.
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_secs);
        if let Some(workers) = settings.http_workers {
            server = server.workers(workers);
        }
        let server = server.run();
        tracing::info!(address = %format!("{}:{port}", settings.host), "listening");
        let worker = settings.worker_enabled.then(|| {
            let (stop, stopped) = watch::channel(false);
            let worker_pool = storage::worker_pool(&pool, settings.worker_db_pool_size);
            let worker = Worker::new(worker_pool.clone(), WorkerConfig::from_settings(&settings))
                .with_monitoring(monitoring.clone());
            (stop, tokio::spawn(worker.run(stopped)), worker_pool)
        });
        let upkeep = {
            let monitoring = monitoring.clone();
            let faults = tokio::spawn(api::control::refresh_faulted(state_for_upkeep));
            tokio::spawn(async move {
                // The fault refresher ends with this task (aborted at shutdown).
                let _faults = AbortOnDrop(faults);
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    monitoring.upkeep();
                }
            })
        };
        Ok(Application {
            port,
            server,
            pool,
            embedded,
            worker,
            lifecycle,
            monitoring,
            shutdown: watch::channel(false).0,
            upkeep,
            shutdown_delay: Duration::from_secs(settings.shutdown_delay_secs),
            shutdown_grace: Duration::from_secs(settings.shutdown_grace_secs),
            listener: listener_copy,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests, the worker's owner).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This server's metrics (tests hand them to workers they drive).
    pub fn monitoring(&self) -> Arc<Monitoring> {
        self.monitoring.clone()
    }

    /// Starts the shutdown that SIGTERM starts, from elsewhere (tests).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until SIGTERM/SIGINT (or a [`ShutdownHandle`], or the server handle stops it).
    /// Then, in order: `/ready` turns 503 and the worker hands its job back; after
    /// `SHUTDOWN_DELAY_SECS` new connections are refused; in-flight requests get up to
    /// `SHUTDOWN_GRACE_SECS` to finish; the HTTP workers stop; the pool closes.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut requested = self.shutdown.subscribe();
        let signalled = async move {
            tokio::select! {
                _ = termination_signal() => {}
                _ = requested.wait_for(|asked| *asked) => {}
            }
        };
        tokio::select! {
            served = &mut self.server => served?,
            _ = signalled => {
                tracing::info!("shutdown requested: draining");
                self.lifecycle.start_draining();
                if let Some((stop, _, _)) = &self.worker {
                    let _ = stop.send(true);
                }
                // Carried out while the server future is polled below.
                let (delay, grace) = (self.shutdown_delay, self.shutdown_grace);
                let (lifecycle, listener) = (self.lifecycle.clone(), self.listener.try_clone()?);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    handle.pause().await;
                    refuse_connections(listener);
                    tracing::info!("shutdown: no new connections; waiting for requests in flight");
                    // Every HTTP worker thread runs until no request is left anywhere: a pooled
                    // connection opened on one worker's runtime may be serving another's request,
                    // and dies with its runtime.
                    let deadline = tokio::time::Instant::now() + grace;
                    while lifecycle.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if lifecycle.in_flight() > 0 {
                        tracing::warn!(
                            in_flight = lifecycle.in_flight(),
                            "shutdown: requests still in flight after SHUTDOWN_GRACE_SECS; stopping"
                        );
                    }
                    handle.stop(true).await
                });
                (&mut self.server).await?;
                tracing::info!("shutdown: HTTP server stopped");
            }
        }
        if let Some((stop, task, worker_pool)) = self.worker.take() {
            let _ = stop.send(true);
            let _ = task.await;
            worker_pool.close().await;
            tracing::info!("shutdown: worker stopped");
        }
        self.upkeep.abort();
        self.pool.close().await;
        tracing::info!("shutdown: database pool closed");
        if let Some(mut pg) = self.embedded.take() {
            tokio::task::spawn_blocking(move || pg.stop()).await?;
        }
        Ok(())
    }
}

/// Loads the documents of `FIXTURES_DIR`, when set (test control, docs/CONTROL.md). Safe to run
/// on every start and on several replicas at once: what exists is left alone.
pub async fn load_fixtures(settings: &Settings, pool: &PgPool) -> anyhow::Result<()> {
    let Some(dir) = &settings.fixtures_dir else {
        return Ok(());
    };
    let landing_root = settings.landing_dir();
    let cfg = crate::service::fixtures::FixtureConfig {
        limits: &settings.limits,
        clock: &settings.clock,
        landing_root: &landing_root,
        max_file_bytes: settings.landing_max_blob_bytes,
    };
    for (file, loaded) in crate::service::fixtures::load_dir(pool, &cfg, dir).await? {
        tracing::info!(
            file,
            audiences = loaded.audiences,
            external_audiences = loaded.external_audiences,
            zone_files = loaded.zone_files,
            "fixture loaded"
        );
    }
    Ok(())
}

/// The configuration of the worker that drains a sandbox on request (test control): the
/// background worker's, under a name of its own.
fn control_worker_config(settings: &Settings) -> WorkerConfig {
    let mut cfg = WorkerConfig::from_settings(settings);
    cfg.id = format!("control-{}", cfg.id);
    cfg
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_openapi(state: web::Data<AppState>) -> HttpResponse {
    api::respond::json_text(actix_web::http::StatusCode::OK, state.openapi_json.clone())
}

/// Stops the listening socket listening, so that new connections are refused at once (a proxy then
/// tries another replica) while the requests in flight finish. On Linux, shutting a listening
/// socket down does that; elsewhere connections wait in the backlog until the server stops.
fn refuse_connections(listener: TcpListener) {
    let socket = std::net::TcpStream::from(std::os::fd::OwnedFd::from(listener));
    if let Err(e) = socket.shutdown(std::net::Shutdown::Both) {
        tracing::debug!(error = %e, "could not shut the listening socket down");
    }
}

/// SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
