//! `podnet workload`: the programs behind the lab's well-known images.

use std::process::ExitCode;

/// Runs built-in workload `name` (whoami, nginx, pause) with the container's arguments.
pub fn run(name: &str, args: &[String]) -> ExitCode {
    match podnet_lab::builtin::run(name, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
