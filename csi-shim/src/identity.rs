//! The CSI Identity service: the driver's name and version, what it offers (the controller
//! service, topology, online expansion), and whether it is ready. Readiness is a [`Probe`]:
//! the controller's asks the provisioner (unreachable: not ready), the node's looks for the
//! kernel's `/dev/nvme-fabrics`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{Service, VolumeExpansion, service, volume_expansion};
use crate::csi::*;

/// Whether the plugin can serve now; `Err` says why not (logged, answered as not ready).
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The Identity service.
pub struct IdentityService {
    /// Whether the controller service is served (by this process or its peers).
    controller: bool,
    probe: Probe,
}

impl IdentityService {
    pub fn new(controller: bool, probe: Probe) -> IdentityService {
        IdentityService { controller, probe }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: crate::DRIVER_NAME.to_owned(),
            vendor_version: crate::VERSION.to_owned(),
            manifest: [("project".to_owned(), "fabriq".to_owned())].into_iter().collect(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(Service { r#type: t as i32 })),
        };
        let mut capabilities = vec![service(service::Type::VolumeAccessibilityConstraints)];
        if self.controller {
            capabilities.insert(0, service(service::Type::ControllerService));
        }
        capabilities.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        });
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let probe = Arc::clone(&self.probe);
        let ready = match tokio::task::spawn_blocking(move || probe()).await {
            Ok(Ok(())) => true,
            Ok(Err(why)) => {
                tracing::warn!(%why, "probe: not ready");
                false
            }
            Err(join) => return Err(Status::internal(format!("the probe panicked: {join}"))),
        };
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
