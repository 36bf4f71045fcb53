fn main() {
    // `prima --version`: what an agent's trial run of a shipped binary reads.
    // PRIMA_FAKE_VERSION (tests only) makes a binary report another version.
    if std::env::args().skip(1).eq(["--version"]) {
        let v = std::env::var("PRIMA_FAKE_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").into());
        println!("prima {v}");
        return;
    }
    let cli = prima::cli::from_env();
    if let Err(e) = prima::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
