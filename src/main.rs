//! The `ltvx` command line. One module per subcommand under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::install_handlers();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::usage_error(e),
    };
    cli::log::set_level(args.quiet, args.verbose);
    match cli::run(args.command) {
        Ok(code) => code,
        Err(ltvx::Error::Interrupted) => {
            eprintln!("ltvx: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("ltvx: error: {e}");
            ExitCode::FAILURE
        }
    }
}
