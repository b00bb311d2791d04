//! Generates the gRPC stubs from `proto/` (real tonic stubs, or madsim's under `--cfg madsim`).
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_build::configure()
        .bytes(["."])
        .compile_protos(&["proto/ravel.proto", "proto/health.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
