//! The `ravel` binary: see `ravel --help`.

// The planted bugs exist for the simulators alone. Cargo unifies features across one build, so a
// workspace-wide build would otherwise hand users a node with the switches compiled in; this makes
// such a binary impossible to build at all.
#[cfg(feature = "planted-bugs")]
compile_error!(
    "the `ravel` binary cannot be built with the planted-bugs feature (it is for the simulators); \
     build it alone: `cargo build --release -p ravel`, and test with `scripts/test`"
);

fn main() -> std::process::ExitCode {
    ravel::cli::main()
}
