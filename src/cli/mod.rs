//! The `prima` command line: one file per subcommand, each with its argh struct and `run`.

mod agent;
mod fetch;
mod inspect;
mod up;

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
    Agent(agent::AgentArgs),
    Fetch(fetch::FetchArgs),
    Inspect(inspect::InspectArgs),
    Up(up::UpArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Agent(a) => agent::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Up(a) => up::run(a),
    }
}
