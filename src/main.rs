//! `issuer`: parses arguments, sets up logging, hands over to the library.

use clap::Parser;

/// mimalloc, not glibc's malloc: the store's writer thread frees what the HTTP workers allocated,
/// and glibc's per-thread arenas made allocation a quarter of intake's CPU (`just bench`, intake
/// at 64 clients: about 6,000 durable issuances/s before, 8,000 to 9,000 after).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = issuer::cli::Cli::parse();
    issuer::telemetry::init(cli.log_format);
    issuer::cli::run(cli).await
}
