//! The native command line: argument parsing, files, progress bars. Only this module touches `std::fs`.

/// `println!` for the CLI's results, as a `Result`: a stdout that is closed (`| head`) or full ends the command
/// with an [`Error::Io`] on `stdout` instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err(|source| $crate::error::Error::Io {
            path: "stdout".into(),
            source,
        })
    }};
}

/// `eprintln!` for the CLI's notes and errors: a closed or full stderr loses the note but ends nothing
/// (`eprintln!` panics there).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod allocator;
mod convert;
mod eval;
mod files;
mod generate;
mod inspect;
mod output;
mod progress;
mod prune;
mod run_on;
mod stream;
mod synth;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};

/// prunelab — structured pruning of LLaMA-family language models.
#[derive(Parser, Debug)]
#[command(name = "prunelab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a model's config, per-layer shapes and parameter counts.
    Inspect(inspect::InspectArgs),
    /// Measure perplexity on a text (methods.md §5).
    Eval(eval::EvalArgs),
    /// Prune a model: score, allocate, slice, evaluate, write.
    Prune(Box<prune::PruneArgs>),
    /// Greedy continuation of a prompt, with prompt and decoding times.
    Generate(generate::GenerateArgs),
    /// Convert between an HF folder and GGUF.
    Convert(convert::ConvertArgs),
    /// Train a tokenizer and a small model from scratch (the built-in demo model).
    Train(train::TrainArgs),
    /// Write a checkpoint of a real model's shapes with random weights (scale and speed checks).
    Synth(synth::SynthArgs),
}

/// Parses a kebab-case name of one of `all`.
fn parse_enum<T: serde::Serialize + serde::de::DeserializeOwned>(
    value: &str,
    flag: &str,
    all: &[T],
) -> Result<T> {
    serde_json::from_value(value.into()).map_err(|_| {
        let names: Vec<String> = all
            .iter()
            .filter_map(|x| serde_json::to_value(x).ok())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        Error::Invalid(format!(
            "{flag} {value:?}: expected one of {}",
            names.join(", ")
        ))
    })
}

/// Runs the CLI: exit code 0 on success, 2 on bad input, 1 on a failure of the machine (a full disk) or of
/// prunelab, 130 when interrupted, and 141 without a word when stdout is closed early (`| head`), as a tool
/// stopped by SIGPIPE.
pub fn main() -> ExitCode {
    allocator::reuse_large_blocks();
    let cli = Cli::parse();
    progress::catch_interrupts();
    let result: Result<()> = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Prune(args) => prune::run(*args),
        Command::Train(args) => train::run(args),
        Command::Synth(args) => synth::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io { path, source })
            if path == "stdout" && source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            note!("error: {e}");
            ExitCode::from(match e {
                Error::Cancelled => 130,
                e if e.is_bad_input() => 2,
                _ => 1,
            })
        }
    }
}
