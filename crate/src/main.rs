//! The `prunelab` command line; everything lives in [`prunelab::cli`].

fn main() -> std::process::ExitCode {
    prunelab::cli::main()
}
