//! The composition root: database, migrations, HTTP server. `main` and the tests both build the
//! server here; tests bind port 0.

use std::net::TcpListener;

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpResponse, HttpServer};
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};
use utoipa_actix_web::AppExt;

use crate::{
    api::{self, context, AppState},
    auth::AuthConfig,
    config::Settings,
    embedded_pg::{self, EmbeddedPostgres},
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
    /// The background worker's stop signal and task, when this process runs one.
    worker: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Connects to `DATABASE_URL`, or starts the embedded PostgreSQL and creates its database.
pub async fn database(settings: &Settings) -> anyhow::Result<(PgPool, Option<EmbeddedPostgres>)> {
    if let Some(url) = &settings.database_url {
        let pool = storage::connect(url, settings.db_pool_size, &settings.db_timeouts).await?;
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
    let pool = storage::connect(&pg.url(), settings.db_pool_size, &settings.db_timeouts).await?;
    Ok((pool, Some(pg)))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let (pool, embedded) = database(&settings).await?;
        storage::migrate(&pool).await?;
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
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            auth: AuthConfig::from_settings(&settings),
            sandboxes: Default::default(),
            openapi_json: openapi::document_json(),
            ais: AisConfig {
                clock: settings.clock.clone(),
                runs_per_sandbox_per_day: settings.runs_per_sandbox_per_day,
                runs_per_audience: settings.runs_per_audience,
                limits: settings.limits.clone(),
            },
            limits: settings.limits.clone(),
            landing,
            landing_keys: Default::default(),
        });
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
        .listen(listener)?;
        if let Some(workers) = settings.http_workers {
            server = server.workers(workers);
        }
        let server = server.run();
        tracing::info!(address = %format!("{}:{port}", settings.host), "listening");
        let worker = settings.worker_enabled.then(|| {
            let (stop, stopped) = watch::channel(false);
            let worker = Worker::new(pool.clone(), WorkerConfig::from_settings(&settings));
            (stop, tokio::spawn(worker.run(stopped)))
        });
        Ok(Application {
            port,
            server,
            pool,
            embedded,
            worker,
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

    /// Serves until SIGINT/SIGTERM (or the server handle stops it), then drains and shuts down.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        self.server.await?;
        // Graceful: the worker stops claiming and finishes the step it is in.
        if let Some((stop, task)) = self.worker.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.pool.close().await;
        if let Some(mut pg) = self.embedded.take() {
            tokio::task::spawn_blocking(move || pg.stop()).await?;
        }
        Ok(())
    }
}

async fn serve_openapi(state: web::Data<AppState>) -> HttpResponse {
    api::respond::json_text(actix_web::http::StatusCode::OK, state.openapi_json.clone())
}
