use std::path::PathBuf;

use anyhow::Context;
use audience_server::{config::Settings, openapi, startup, storage, telemetry};
use clap::{Parser, Subcommand};

/// A persistent reference server for Adobe Experience Platform's audience APIs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Write the OpenAPI document (to stdout, or to --out).
    Openapi {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi { out } => {
            let text = openapi::document_json();
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        Command::Migrate => {
            telemetry::init(&settings.log_level, settings.log_format);
            settings.validate()?;
            let (pool, pg) = startup::database(&settings).await?;
            storage::migrate(&pool).await?;
            pool.close().await;
            drop(pg);
            tracing::info!("migrations applied");
        }
        Command::Serve => {
            telemetry::init(&settings.log_level, settings.log_format);
            tracing::debug!(?settings, "starting");
            startup::Application::build(settings)
                .await?
                .run_until_stopped()
                .await?;
        }
    }
    Ok(())
}
