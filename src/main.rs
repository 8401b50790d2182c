//! `issuer`: parses arguments, sets up logging, hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = issuer::cli::Cli::parse();
    issuer::telemetry::init(cli.log_format);
    issuer::cli::run(cli).await
}
