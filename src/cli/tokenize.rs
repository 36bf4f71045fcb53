//! `prima tokenize`: show how a model's tokenizer splits text.

use argh::FromArgs;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// print the tokens of TEXT (works on vocab-only GGUFs)
#[derive(FromArgs)]
#[argh(subcommand, name = "tokenize")]
pub struct TokenizeArgs {
    /// the GGUF model (or vocab-only GGUF)
    #[argh(option, short = 'm')]
    pub model: String,
    /// the text
    #[argh(positional)]
    pub text: String,
    /// print only the ids, as a list
    #[argh(switch)]
    pub ids: bool,
    /// do not add BOS/EOS even if the model asks for them
    #[argh(switch)]
    pub no_bos: bool,
    /// read special tokens such as <|im_start|> in the text as tokens
    #[argh(switch)]
    pub special: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let f = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&f)?;
    let ids = tok.encode(&a.text, !a.no_bos, a.special);
    if a.ids {
        println!("{ids:?}");
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(&tok.token_to_piece(id, true)).into_owned();
            println!("{id:6} -> {piece:?}");
        }
    }
    Ok(())
}
