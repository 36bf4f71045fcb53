fn main() {
    let cli: prima::cli::Cli = argh::from_env();
    if let Err(e) = prima::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
