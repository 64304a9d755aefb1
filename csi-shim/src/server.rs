//! gRPC over a Unix socket: the server side (what kubelet and the sidecars connect to) and
//! the client side (`fabriq-csi client` and the tests). Endpoints are written as the CSI
//! sidecars write them: `unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a plain path.

use std::future::Future;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::controller::ControllerService;
use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::identity::IdentityService;
use crate::node::NodeService;

/// Why serving or connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint {0:?} is not a Unix socket (unix:///path, unix:/path or /path)")]
    Endpoint(String),
    #[error("{path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The socket path of an endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let path = endpoint.strip_prefix("unix://").or_else(|| endpoint.strip_prefix("unix:")).unwrap_or(endpoint);
    if path.starts_with('/') && !endpoint.contains("://") || endpoint.starts_with("unix:///") {
        Ok(PathBuf::from(path))
    } else {
        Err(Error::Endpoint(endpoint.to_owned()))
    }
}

/// The services one process serves.
pub struct Services {
    pub identity: IdentityService,
    pub controller: Option<ControllerService>,
    pub node: Option<NodeService>,
}

/// Binds `socket` (replacing a stale socket file left by an earlier run) and serves until
/// `shutdown` completes; the socket file is removed afterwards.
pub async fn serve(socket: &Path, services: Services, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let sock_err = |source| Error::Socket { path: socket.to_owned(), source };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(sock_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(socket).map_err(sock_err)?;
    tracing::info!(socket = %socket.display(), controller = services.controller.is_some(), node = services.node.is_some(), "serving CSI");
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(services.identity))
        .add_optional_service(services.controller.map(ControllerServer::new))
        .add_optional_service(services.node.map(NodeServer::new));
    let result = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown).await;
    std::fs::remove_file(socket).ok();
    Ok(result?)
}

/// A gRPC channel to the driver at `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, Error> {
    let path = socket.to_owned();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("unix:/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("/run/csi.sock").unwrap(), PathBuf::from("/run/csi.sock"));
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("csi.sock").is_err());
    }
}
