//! The CSI v1 protobuf messages and gRPC services (package `csi.v1`), generated at build
//! time from `proto/csi.proto` (see `build.rs`).
#![allow(clippy::all, clippy::pedantic, missing_docs)]
tonic::include_proto!("csi.v1");
