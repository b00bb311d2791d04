//! The generated gRPC types and stubs (`proto/ravel.proto`, `proto/health.proto`).

#![allow(clippy::all, missing_docs)]

pub mod ravel {
    tonic::include_proto!("ravel.v1");
}

pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
