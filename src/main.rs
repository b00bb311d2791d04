//! The `ravel` binary: see `ravel --help`.

/// glibc's malloc took ~10 % of a leader's CPU under load (many small, short-lived buffers per
/// request); mimalloc's thread-local free lists cost less. Simulation keeps the system allocator.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ravel::cli::main()
}
