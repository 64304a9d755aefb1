//! fabriq-provisioner: turns a set of storage nodes (each running fabriq-target and its node
//! API) into one service. Callers ask for a volume of a size and get back where to connect;
//! the provisioner decides the node and pool, carves the volume through the node's API, and
//! controls which hosts may reach it.
//!
//! - [`model`]: the records (nodes, volumes and the phase of their intents, tombstones) and
//!   the checks on names, labels and NQNs;
//! - [`store`]: the [`store::Store`] trait, its redb (embedded) and etcd (several
//!   provisioners) implementations, and the typed records over it;
//! - [`leader`]: who may change things (always this one with redb; an etcd lease election
//!   otherwise), and the fence that stops a deposed leader's writes;
//! - [`placement`]: where a new volume goes (a pure function);
//! - [`service`]: every operation, each multi-step one written as an intent first;
//! - [`reconcile`]: drives nodes to the records and finishes interrupted intents;
//! - [`nodeapi`]: the client of a node's REST API; [`status`]: what was last seen of nodes;
//! - [`api`]: the REST API (axum, utoipa, tower); [`client`]: its client, for `fabriqctl`;
//! - [`config`], [`daemon`], [`notify`]: the process under systemd;
//! - [`locks`], [`failpoint`]: small helpers (sizes come from `fabriq-units`).
//!
//! docs/provisioner-design.md is the design; each module's documentation holds the detail.

#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod failpoint;
pub mod leader;
pub mod locks;
pub mod model;
pub mod nodeapi;
pub mod notify;
pub mod placement;
pub mod reconcile;
pub mod service;
pub mod status;
pub mod store;
