//! Compiles `proto/csi.proto` into Rust at build time, in pure Rust: protox parses the file
//! into descriptors (no `protoc` on the machine), tonic-prost-build turns them into prost
//! messages and tonic client and server code in `OUT_DIR`, included by `src/csi.rs`.
//! Generated code is not committed: the `.proto` is the one source, nothing can drift.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/csi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
