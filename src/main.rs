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
    keep_large_buffers_out_of_the_heap();
    ravel::cli::main()
}

/// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so
/// after a node's first snapshot every later snapshot's buffers (tens of MiB) come from the heap,
/// which glibc seldom gives back: the node's memory stays at its peak for good (measured with
/// `scripts/memory-bench`: followers at 5x the live data instead of 3x). A fixed threshold keeps
/// large buffers mapped on their own, returned to the system when freed.
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
