//! The `prima` command line: one file per subcommand, each with its argh struct and `run`.

mod agent;
mod bench;
mod chat;
mod common;
mod fetch;
pub mod inspect;
mod perplexity;
mod plan;
mod run;
mod serve;
mod synth;
mod tokenize;
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
    Run(run::RunArgs),
    Chat(chat::ChatArgs),
    Tokenize(tokenize::TokenizeArgs),
    Perplexity(perplexity::PerplexityArgs),
    Inspect(inspect::InspectArgs),
    Fetch(fetch::FetchArgs),
    Bench(bench::BenchArgs),
    Plan(plan::PlanArgs),
    Agent(agent::AgentArgs),
    Up(up::UpArgs),
    Serve(serve::ServeArgs),
    Down(up::DownArgs),
    Synth(synth::SynthArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Agent(a) => agent::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Up(a) => up::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Down(a) => up::down(a),
        Command::Synth(a) => synth::run(a),
    }
}
