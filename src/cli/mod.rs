//! The `prima` command line: one file per subcommand, each with its argh struct and `run`.

mod bench;
mod fetch;
mod inspect;
mod plan;

use argh::FromArgs;

use crate::error::Result;

/// prima: run large language models (GGUF) on one device or a home cluster.
#[derive(FromArgs)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    Bench(bench::BenchArgs),
    Fetch(fetch::FetchArgs),
    Inspect(inspect::InspectArgs),
    Plan(plan::PlanArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Plan(a) => plan::run(a),
    }
}
