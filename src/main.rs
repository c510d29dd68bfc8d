use std::process::ExitCode;

use sockcheck::exit::{ExitOnOom, ExitStatus};

/// An allocation that fails is one line and exit 3, not an abort.
#[global_allocator]
static ALLOCATOR: ExitOnOom = ExitOnOom;

fn main() -> ExitCode {
    match sockcheck::cli::run(std::env::args_os()) {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            sockcheck::output::error(&error);
            let status = if error.is_usage() {
                ExitStatus::Usage
            } else {
                ExitStatus::Failed
            };
            ExitCode::from(status.code())
        }
    }
}
