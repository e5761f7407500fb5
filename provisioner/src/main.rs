use clap::Parser;

fn main() {
    let cli = provisioner::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(provisioner::cli::EXIT_ERROR);
        }
    };
    let code = runtime.block_on(provisioner::cli::run(cli));
    std::process::exit(code);
}
