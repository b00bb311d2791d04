//! The `ravel` binary: see `ravel --help`.

fn main() -> std::process::ExitCode {
    ravel::cli::main()
}
