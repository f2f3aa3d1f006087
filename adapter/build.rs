//! Compiles KEDA's external-scaler contract (`proto/externalscaler.proto`, vendored verbatim)
//! into the server and client types `src/keda` includes. `protox` parses the file in pure
//! Rust, so building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The client is for tests and tools that bring their own channel; the adapter
        // itself does not depend on tonic's transport.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
