//! The standard gRPC health service: SERVING while the node's event loop answers.

use tonic::{Request, Response, Status};

use super::handle::NodeHandle;
use super::proto::health::{
    health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
    HealthCheckResponse,
};
use crate::kv::KvStateMachine;
use crate::replica::StateMachine;

const SERVICES: [&str; 4] = ["", "ravel.v1.Kv", "ravel.v1.Membership", "ravel.v1.Peer"];

pub struct HealthService<S: StateMachine = KvStateMachine> {
    node: NodeHandle<S>,
}

impl<S: StateMachine> HealthService<S> {
    pub fn new(node: NodeHandle<S>) -> Self {
        HealthService { node }
    }
}

#[tonic::async_trait]
impl<S: StateMachine> Health for HealthService<S> {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !SERVICES.contains(&service.as_str()) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        let status = match self.node.view().await {
            Ok(_) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }
}
