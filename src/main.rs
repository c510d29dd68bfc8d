use std::process::ExitCode;

use sockcheck::exit::ExitStatus;

fn main() -> ExitCode {
    match sockcheck::cli::run(std::env::args_os()) {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            eprintln!("sockcheck: {error}");
            if let Some(tip) = error.tip() {
                eprintln!("  tip: {tip}");
            }
            let status = if error.is_usage() {
                ExitStatus::Usage
            } else {
                ExitStatus::Failed
            };
            ExitCode::from(status.code())
        }
    }
}
