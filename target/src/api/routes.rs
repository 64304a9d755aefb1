//! The node API's handlers: each validates what axum could not (path parameters), hands the
//! work to the node manager on a blocking thread (its changes flush metadata to devices), and
//! turns the result into a response. The `#[utoipa::path]` on each is its OpenAPI entry.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::{AppState, metrics};
use crate::node::{
    AddListener, AddPool, CreateVolume, HostsInfo, ListenerView, Node, PoolInfoView, UpdateVolume, VolumeInfo,
};
use fabriq_http::extract::{body, path_param, query_params};

/// Runs `work` on the node manager on a blocking thread, in the request's span.
async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Node) -> Result<T, crate::node::NodeError> + Send + 'static,
{
    Ok(fabriq_http::extract::blocking(Arc::clone(&state.node), work).await.map_err(|_| ApiError::Internal)??)
}

// -- health ---------------------------------------------------------------------------------

/// `GET /v1/health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` while the node serves every pool; `degraded` when some pool failed to open at
    /// start-up (listed in `failed_pools`): the other pools' volumes are served.
    #[schema(example = "ok")]
    pub status: String,
    /// The pools that failed to open (`GET /v1/pools/{name}` says why).
    #[serde(default)]
    pub failed_pools: Vec<String>,
    #[schema(example = "0.1.0")]
    pub version: String,
    pub uptime_s: u64,
    pub pools: usize,
    pub volumes: usize,
}

/// Whether the node is up. Needs no token (for probes and load balancers).
#[utoipa::path(get, path = "/v1/health", tag = "node", security(()),
    responses((status = 200, description = "The node serves", body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    let (pools, volumes, uptime, failed) = blocking(&state, |node| {
        let (pools, volumes) = node.counts();
        let failed: Vec<String> = node.failed_pools().into_iter().map(|(name, _)| name).collect();
        Ok((pools, volumes, node.uptime(), failed))
    })
    .await?;
    Ok(Json(Health {
        status: String::from(if failed.is_empty() { "ok" } else { "degraded" }),
        failed_pools: failed,
        version: String::from(env!("CARGO_PKG_VERSION")),
        uptime_s: uptime.as_secs(),
        pools,
        volumes,
    }))
}

/// Prometheus text exposition: per-volume I/O counts, bytes and latency histograms, connected
/// controllers and queues, pool capacity and use.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
    ))]
pub async fn get_metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let m = blocking(&state, |node| Ok(node.metrics())).await?;
    let text = metrics::render(&m);
    Ok(([(header::CONTENT_TYPE, fabriq_http::prometheus::CONTENT_TYPE)], text).into_response())
}

// -- pools ----------------------------------------------------------------------------------

/// Every pool of the node.
#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses(
        (status = 200, body = Vec<PoolInfoView>),
        (status = 401, body = ErrorBody),
    ))]
pub async fn list_pools(State(state): State<Arc<AppState>>) -> Result<Json<Vec<PoolInfoView>>, ApiError> {
    Ok(Json(blocking(&state, |node| Ok(node.list_pools())).await?))
}

/// Adds a device as a pool: the pool on it is opened (its volumes are exported), or a new one
/// is created (a missing file is created sparse at `size_bytes`). Remembered across restarts.
/// The name and path of a pool that failed to open at start-up open it again (no `force`).
#[utoipa::path(post, path = "/v1/pools", tag = "pools", request_body = AddPool,
    responses(
        (status = 201, description = "Pool opened or created", body = PoolInfoView),
        (status = 400, description = "Invalid name or size", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "Name or device in use; the device holds another pool, a file system or a partition table (force)", body = ErrorBody),
        (status = 422, description = "The device is missing, too small or not a file or block device", body = ErrorBody),
    ))]
pub async fn add_pool(
    State(state): State<Arc<AppState>>,
    json: Result<Json<AddPool>, JsonRejection>,
) -> Result<(StatusCode, Json<PoolInfoView>), ApiError> {
    let req = body(json)?;
    let view = blocking(&state, move |node| node.add_pool(&req)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One pool.
#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    responses(
        (status = 200, body = PoolInfoView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get_pool(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PoolInfoView>, ApiError> {
    let name = path_param(path)?;
    Ok(Json(blocking(&state, move |node| node.get_pool(&name)).await?))
}

/// `DELETE /v1/pools/{name}` options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemovePoolParams {
    /// Forget a failed pool (one that could not be opened): its volumes, unknown while it
    /// cannot be read, are given up on this node.
    #[serde(default)]
    pub force: bool,
}

/// Removes a pool added through the API from the node: it is closed and no longer opened at
/// start-up. Its label stays on the device (adding it again opens it with its volumes). A pool
/// that holds volumes is refused (delete them first); a failed pool needs `force=true`; a pool
/// of the configuration file is removed there.
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "The pool's name"), RemovePoolParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The pool holds volumes, failed (force), or is in the configuration file", body = ErrorBody),
    ))]
pub async fn remove_pool(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RemovePoolParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_param(path)?;
    let params = query_params(query)?;
    blocking(&state, move |node| node.remove_pool(&name, params.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- volumes --------------------------------------------------------------------------------

/// Every volume of the node, by name.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses((status = 200, body = Vec<VolumeInfo>), (status = 401, body = ErrorBody)))]
pub async fn list_volumes(State(state): State<Arc<AppState>>) -> Result<Json<Vec<VolumeInfo>>, ApiError> {
    Ok(Json(blocking(&state, |node| Ok(node.list_volumes())).await?))
}

/// Creates a volume and exports it (subsystem `nqn.2026-11.dev.fabriq:vol:<id>`, namespace 1);
/// the answer says how hosts connect. Idempotent by name: the same name, size and block size
/// again answers 200 with the existing volume (and allows the hosts named).
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = CreateVolume,
    responses(
        (status = 201, description = "Created and exported", body = VolumeInfo),
        (status = 200, description = "It existed already, as asked", body = VolumeInfo),
        (status = 400, description = "Invalid JSON, field, name, block size, size or host NQN", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "A volume of that name exists with another size, block size or pool; or the pool named failed to open", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 507, description = "The pool has not enough free space (or metadata room)", body = ErrorBody),
    ))]
pub async fn create_volume(
    State(state): State<Arc<AppState>>,
    json: Result<Json<CreateVolume>, JsonRejection>,
) -> Result<(StatusCode, Json<VolumeInfo>), ApiError> {
    let req = body(json)?;
    let (info, created) = blocking(&state, move |node| node.create_volume(&req)).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(info)))
}

/// One volume.
#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "The volume's id (UUID)")),
    responses(
        (status = 200, body = VolumeInfo),
        (status = 400, description = "Not a volume id", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<VolumeInfo>, ApiError> {
    let id = path_param(path)?;
    Ok(Json(blocking(&state, move |node| node.get_volume(&id)).await?))
}

/// Grows a volume (connected hosts get a namespace-attribute-changed event and see the new
/// size), and/or opens it to every host or only its list.
#[utoipa::path(patch, path = "/v1/volumes/{id}", tag = "volumes", request_body = UpdateVolume,
    params(("id" = String, Path, description = "The volume's id (UUID)")),
    responses(
        (status = 200, body = VolumeInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The volume is being deleted", body = ErrorBody),
        (status = 422, description = "Shrinking is refused", body = ErrorBody),
        (status = 507, description = "The pool has not enough free space", body = ErrorBody),
    ))]
pub async fn update_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    json: Result<Json<UpdateVolume>, JsonRejection>,
) -> Result<Json<VolumeInfo>, ApiError> {
    let id = path_param(path)?;
    let req = body(json)?;
    Ok(Json(blocking(&state, move |node| node.update_volume(&id, &req)).await?))
}

/// `DELETE /v1/volumes/{id}` options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete even while hosts are allowed or connected (they are disconnected).
    #[serde(default)]
    pub force: bool,
}

/// Deletes a volume and discards its data. Refused while it is exported (a host allowed, or a
/// controller connected) unless `force=true`.
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "volumes",
    params(("id" = String, Path, description = "The volume's id (UUID)"), DeleteParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The volume is exported", body = ErrorBody),
        (status = 503, description = "Commands still in flight; retry", body = ErrorBody),
    ))]
pub async fn delete_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let id = path_param(path)?;
    let params = query_params(query)?;
    blocking(&state, move |node| node.delete_volume(&id, params.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- hosts ----------------------------------------------------------------------------------

/// Who may connect to a volume.
#[utoipa::path(get, path = "/v1/volumes/{id}/hosts", tag = "hosts",
    params(("id" = String, Path, description = "The volume's id (UUID)")),
    responses(
        (status = 200, body = HostsInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn list_hosts(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<HostsInfo>, ApiError> {
    let id = path_param(path)?;
    Ok(Json(blocking(&state, move |node| node.hosts(&id)).await?))
}

/// Allows a host on a volume, at once and across restarts. Idempotent.
#[utoipa::path(put, path = "/v1/volumes/{id}/hosts/{hostnqn}", tag = "hosts",
    params(
        ("id" = String, Path, description = "The volume's id (UUID)"),
        ("hostnqn" = String, Path, description = "The host's NQN, as in its /etc/nvme/hostnqn"),
    ),
    responses(
        (status = 201, description = "Allowed now", body = HostsInfo),
        (status = 200, description = "It was allowed already", body = HostsInfo),
        (status = 400, description = "Not a volume id, or not an NQN", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The volume is being deleted", body = ErrorBody),
    ))]
pub async fn allow_host(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(StatusCode, Json<HostsInfo>), ApiError> {
    let (id, hostnqn) = path_param(path)?;
    let (hosts, added) = blocking(&state, move |node| node.allow_host(&id, &hostnqn)).await?;
    Ok((if added { StatusCode::CREATED } else { StatusCode::OK }, Json(hosts)))
}

/// Revokes a host: its controllers on the volume are disconnected at once. Idempotent.
#[utoipa::path(delete, path = "/v1/volumes/{id}/hosts/{hostnqn}", tag = "hosts",
    params(
        ("id" = String, Path, description = "The volume's id (UUID)"),
        ("hostnqn" = String, Path, description = "The host's NQN"),
    ),
    responses(
        (status = 204, description = "Not allowed (any more)"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn revoke_host(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (id, hostnqn) = path_param(path)?;
    blocking(&state, move |node| node.revoke_host(&id, &hostnqn)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- listeners ------------------------------------------------------------------------------

/// Every listening socket (configured and added through the API).
#[utoipa::path(get, path = "/v1/listeners", tag = "listeners",
    responses((status = 200, body = Vec<ListenerView>), (status = 401, body = ErrorBody)))]
pub async fn list_listeners(State(state): State<Arc<AppState>>) -> Result<Json<Vec<ListenerView>>, ApiError> {
    Ok(Json(blocking(&state, |node| Ok(node.list_listeners())).await?))
}

/// Listens on one more address, at once and across restarts: NVMe/TCP, or NVMe/RDMA (through
/// the RDMA CM, on an address of an RDMA device) in a build with RDMA. Discovery log entries
/// list it with its transport's fields.
#[utoipa::path(post, path = "/v1/listeners", tag = "listeners", request_body = AddListener,
    responses(
        (status = 201, body = ListenerView),
        (status = 400, description = "Invalid JSON, address, transport or advertise", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "A listener of that transport on that address exists, or the address is in use", body = ErrorBody),
        (status = 422, description = "The address is not this node's (for RDMA: no RDMA device has it), or the transport is `rdma` and this binary was built without RDMA (`transport_not_built`)", body = ErrorBody),
    ))]
pub async fn add_listener(
    State(state): State<Arc<AppState>>,
    json: Result<Json<AddListener>, JsonRejection>,
) -> Result<(StatusCode, Json<ListenerView>), ApiError> {
    let req = body(json)?;
    Ok((StatusCode::CREATED, Json(blocking(&state, move |node| node.add_listener(&req)).await?)))
}

/// Stops listening on a listener added through the API (connections on it stay).
#[utoipa::path(delete, path = "/v1/listeners/{port_id}", tag = "listeners",
    params(("port_id" = u16, Path, description = "The listener's port id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The listener is in the configuration file", body = ErrorBody),
    ))]
pub async fn remove_listener(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let port_id = path_param(path)?;
    let port_id: u16 = port_id.parse().map_err(|_| ApiError::Path {
        what: "port id",
        value: port_id.clone(),
        expected: "a number 1..=65535",
    })?;
    blocking(&state, move |node| node.remove_listener(port_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
