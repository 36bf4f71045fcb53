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

/// The command line, with llama.cpp's `-ngl N` read as `--gpu-layers N` (argh's short options
/// are one letter).
pub fn from_env() -> Cli {
    let args: Vec<String> =
        std::env::args().map(|a| if a == "-ngl" { "--gpu-layers".to_string() } else { a }).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = strs.first().map(|c| std::path::Path::new(c).file_name().and_then(|n| n.to_str()).unwrap_or(c));
    match Cli::from_args(&[cmd.unwrap_or("prima")], strs.get(1..).unwrap_or(&[])) {
        Ok(cli) => cli,
        Err(early) => match early.status {
            Ok(()) => {
                println!("{}", early.output);
                std::process::exit(0)
            }
            Err(()) => {
                eprintln!("{}\nRun {} --help for more information.", early.output, cmd.unwrap_or("prima"));
                std::process::exit(1)
            }
        },
    }
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
