//! The margo-agent binary: all logic lives in the library; `main` only maps the outcome to an
//! exit code.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    margo_agent::cli::main()
}
