use clap::Parser;

/// Placeholder until the crate is built out.
#[derive(Parser)]
#[command(name = "metrics-agent", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
