//! The API's handlers: each hands the work to the service on a blocking thread (its
//! operations call nodes and write the store) and turns the result into a response. The
//! `#[utoipa::path]` on each is its OpenAPI entry.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::service::{
    Capacity, CreateVolume, HostList, NodeView, Publication, RegisterNode, Service, UpdateNode, UpdateVolume,
    VolumeFilter, VolumePage, VolumeView,
};
use fabriq_http::extract::{body, path_param, query_params};

/// Runs `work` on the service on a blocking thread, in the request's span.
async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Service) -> Result<T, crate::service::Error> + Send + 'static,
{
    Ok(fabriq_http::extract::blocking(Arc::clone(&state.service), work).await.map_err(|_| ApiError::Internal)??)
}

fn created_or_ok(created: bool) -> StatusCode {
    if created { StatusCode::CREATED } else { StatusCode::OK }
}

/// `?force=true`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForceParam {
    /// Do it even though the resource is in use (see the operation).
    #[serde(default)]
    pub force: bool,
}

// -- health ---------------------------------------------------------------------------------

/// `GET /v1/health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    #[schema(example = "0.1.0")]
    pub version: String,
    /// `redb` or `etcd`.
    pub store: String,
    /// This provisioner reconciles and takes changes.
    pub leader: bool,
    /// The leader's URL, when known.
    pub leader_url: Option<String>,
}

/// Whether the provisioner serves, and who leads. Needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "provisioner", security(()),
    responses((status = 200, description = "The provisioner serves", body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    let s = &state.service;
    Json(Health {
        status: String::from("ok"),
        version: String::from(env!("CARGO_PKG_VERSION")),
        store: s.records.store().kind().to_owned(),
        leader: s.leadership.is_leader(),
        leader_url: s.leadership.leader_url(),
    })
}

/// Prometheus text exposition: requests and their latency, volumes by state, node health
/// and capacity, leadership, reconciler activity.
#[utoipa::path(get, path = "/metrics", tag = "provisioner",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
    ))]
pub async fn get_metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let metrics = Arc::clone(&state.metrics);
    let text = blocking(&state, move |s| super::metrics::render(s, &metrics)).await?;
    Ok(([(header::CONTENT_TYPE, fabriq_http::prometheus::CONTENT_TYPE)], text).into_response())
}

// -- nodes ----------------------------------------------------------------------------------

/// Every registered node, with its health and capacity as last seen.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<NodeView>), (status = 401, body = ErrorBody)))]
pub async fn list_nodes(State(state): State<Arc<AppState>>) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(blocking(&state, |s| s.list_nodes()).await?))
}

/// Registers a storage node: its node API is called with the token first. Registering the
/// same node again changes nothing.
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = RegisterNode,
    responses(
        (status = 201, description = "Registered", body = NodeView),
        (status = 200, description = "It was registered exactly so already", body = NodeView),
        (status = 400, description = "Invalid JSON, name, URL, token or labels", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token", body = ErrorBody),
        (status = 409, description = "The name is registered otherwise, or the URL under another name", body = ErrorBody),
        (status = 421, description = "Not the leader: `leader_url` says where to go", body = ErrorBody),
        (status = 422, description = "The node cannot be reached, or refuses the token", body = ErrorBody),
    ))]
pub async fn register_node(
    State(state): State<Arc<AppState>>,
    json: Result<Json<RegisterNode>, JsonRejection>,
) -> Result<(StatusCode, Json<NodeView>), ApiError> {
    let req = body(json)?;
    let (view, created) = blocking(&state, move |s| s.register_node(req)).await?;
    Ok((created_or_ok(created), Json(view)))
}

/// One node: registration, health (`healthy`, `unreachable`, `unknown`), pools and capacity
/// as last seen, volumes placed on it, orphans found on it.
#[utoipa::path(get, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_node(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<NodeView>, ApiError> {
    let name = path_param(path)?;
    Ok(Json(blocking(&state, move |s| s.get_node(&name)).await?))
}

/// Changes a node's labels, URL or token, or drains it (no new volumes; its volumes stay)
/// and undrains it.
#[utoipa::path(patch, path = "/v1/nodes/{name}", tag = "nodes", request_body = UpdateNode,
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, body = NodeView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The URL is another node's", body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 422, description = "A new URL or token does not reach the node", body = ErrorBody),
    ))]
pub async fn update_node(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    json: Result<Json<UpdateNode>, JsonRejection>,
) -> Result<Json<NodeView>, ApiError> {
    let name = path_param(path)?;
    let req = body(json)?;
    Ok(Json(blocking(&state, move |s| s.update_node(&name, req)).await?))
}

/// Forgets a node. Refused while volumes are placed on it unless `force=true`: their records
/// are then forgotten too (their data stays on the node, untouched). Removing a node that is
/// not registered is done already.
#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "The node's name"), ForceParam),
    responses(
        (status = 204, description = "Not registered (any more)"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "Volumes are placed on it", body = ErrorBody),
        (status = 421, body = ErrorBody),
    ))]
pub async fn remove_node(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ForceParam>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_param(path)?;
    let q = query_params(query)?;
    blocking(&state, move |s| s.remove_node(&name, q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- volumes --------------------------------------------------------------------------------

/// Volumes in name order, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", params(VolumeFilter),
    responses((status = 200, body = VolumePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_volumes(
    State(state): State<Arc<AppState>>,
    query: Result<Query<VolumeFilter>, QueryRejection>,
) -> Result<Json<VolumePage>, ApiError> {
    let filter = query_params(query)?;
    Ok(Json(blocking(&state, move |s| s.list_volumes(&filter)).await?))
}

/// Creates a volume: places it (free space, topology, spreading), carves it on the node, and
/// answers once it is ready. Idempotent by name: the same request again answers 200 with the
/// same volume; one that differs (size, block size, requirements, labels) is 409.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = CreateVolume,
    responses(
        (status = 201, description = "Created (or an interrupted create of this request finished)", body = VolumeView),
        (status = 200, description = "It existed already, as asked", body = VolumeView),
        (status = 400, description = "Invalid JSON, name, size, block size, requirements or labels", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The name is taken by another request, or the volume is being deleted", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 422, description = "No node satisfies the node, pool and topology requirements (`unsatisfiable_topology`, `unknown_node`)", body = ErrorBody),
        (status = 502, description = "The node refused the volume for another reason", body = ErrorBody),
        (status = 503, description = "The chosen node or every matching node is unreachable: the create finishes when it answers; retry", body = ErrorBody),
        (status = 507, description = "No matching node has the room (`insufficient_capacity`)", body = ErrorBody),
    ))]
pub async fn create_volume(
    State(state): State<Arc<AppState>>,
    json: Result<Json<CreateVolume>, JsonRejection>,
) -> Result<(StatusCode, Json<VolumeView>), ApiError> {
    let req = body(json)?;
    let (view, created) = blocking(&state, move |s| s.create_volume(req)).await?;
    Ok((created_or_ok(created), Json(view)))
}

/// One volume, by name (or by id).
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "The volume's name, or its id")),
    responses((status = 200, body = VolumeView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<VolumeView>, ApiError> {
    let name = path_param(path)?;
    Ok(Json(blocking(&state, move |s| s.get_volume(&name)).await?))
}

/// Grows a volume (connected hosts see the new size), and/or replaces its labels.
#[utoipa::path(patch, path = "/v1/volumes/{name}", tag = "volumes", request_body = UpdateVolume,
    params(("name" = String, Path, description = "The volume's name, or its id")),
    responses(
        (status = 200, body = VolumeView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The volume is being created or deleted, or is degraded", body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 422, description = "Shrinking is refused", body = ErrorBody),
        (status = 503, description = "The node is unreachable: the grow is recorded and applied when it answers", body = ErrorBody),
        (status = 507, description = "The volume's pool has not the room", body = ErrorBody),
    ))]
pub async fn update_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    json: Result<Json<UpdateVolume>, JsonRejection>,
) -> Result<Json<VolumeView>, ApiError> {
    let name = path_param(path)?;
    let req = body(json)?;
    Ok(Json(blocking(&state, move |s| s.update_volume(&name, req)).await?))
}

/// Deletes a volume and its data. Refused while it is published, unless `force=true` (its
/// hosts are disconnected). Deleting a volume that does not exist is done already.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "The volume's name, or its id"), ForceParam),
    responses(
        (status = 204, description = "Deleted, or there was no such volume"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "Published to hosts", body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 503, description = "The node is unreachable: the delete finishes when it answers", body = ErrorBody),
    ))]
pub async fn delete_volume(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ForceParam>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_param(path)?;
    let q = query_params(query)?;
    blocking(&state, move |s| s.delete_volume(&name, q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- hosts ----------------------------------------------------------------------------------

/// The hosts a volume is published to.
#[utoipa::path(get, path = "/v1/volumes/{name}/hosts", tag = "hosts",
    params(("name" = String, Path, description = "The volume's name, or its id")),
    responses((status = 200, body = HostList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_hosts(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<HostList>, ApiError> {
    let name = path_param(path)?;
    Ok(Json(blocking(&state, move |s| s.hosts(&name)).await?))
}

/// Publishes a volume to a host: the host's NQN goes on the volume's allow list, and the
/// answer says how it connects (every path, when the node has several). Idempotent.
#[utoipa::path(put, path = "/v1/volumes/{name}/hosts/{hostnqn}", tag = "hosts",
    params(
        ("name" = String, Path, description = "The volume's name, or its id"),
        ("hostnqn" = String, Path, description = "The host's NQN, as in its /etc/nvme/hostnqn"),
    ),
    responses(
        (status = 201, description = "Published now", body = Publication),
        (status = 200, description = "It was published already", body = Publication),
        (status = 400, description = "Not an NQN", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The volume is being created or deleted, or is degraded", body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 422, description = "The volume is published to the most hosts it may have", body = ErrorBody),
        (status = 503, description = "The node is unreachable: the host is recorded and allowed when it answers", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(StatusCode, Json<Publication>), ApiError> {
    let (name, host) = path_param(path)?;
    let (publication, added) = blocking(&state, move |s| s.publish(&name, &host)).await?;
    Ok((created_or_ok(added), Json(publication)))
}

/// Unpublishes a volume from a host: the host is taken off the allow list and its
/// connections to the volume are cut. Idempotent (also for a volume that does not exist).
#[utoipa::path(delete, path = "/v1/volumes/{name}/hosts/{hostnqn}", tag = "hosts",
    params(
        ("name" = String, Path, description = "The volume's name, or its id"),
        ("hostnqn" = String, Path, description = "The host's NQN"),
    ),
    responses(
        (status = 204, description = "Not published (any more)"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 421, body = ErrorBody),
        (status = 503, description = "The node is unreachable: the host is off the record and revoked when it answers", body = ErrorBody),
    ))]
pub async fn unpublish(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (name, host) = path_param(path)?;
    blocking(&state, move |s| s.unpublish(&name, &host)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- capacity -------------------------------------------------------------------------------

/// Total, free and placeable capacity, overall and per value of each node label.
#[utoipa::path(get, path = "/v1/capacity", tag = "capacity",
    responses((status = 200, body = Capacity), (status = 401, body = ErrorBody)))]
pub async fn capacity(State(state): State<Arc<AppState>>) -> Result<Json<Capacity>, ApiError> {
    Ok(Json(blocking(&state, |s| s.capacity()).await?))
}
