//! The daemon's configuration: the TOML file named by `fabriq-target --config FILE`.
//!
//! Two layers. The private `Raw*` structs mirror the text: every value is a
//! [`toml::Spanned`] so that it knows where it was written, and every table is
//! `deny_unknown_fields`. [`Config`] and its parts are the typed, validated result;
//! nothing downstream sees a raw value.
//!
//! Invariants of a [`Config`] returned by [`Config::parse`], [`Config::load`] or
//! [`Config::embedded_default`]:
//! - at least one listener, and at least one that is not `discovery_only` when there
//!   are subsystems; no two listeners on the same address, no wildcard listener
//!   sharing a port with another listener of its address family; only TCP;
//! - every NQN (subsystem and host) is well formed, subsystem NQNs are unique and none
//!   is the discovery NQN; `allow_any_host` and a non-empty `hosts` list never meet;
//! - every namespace has an NSID in `1..=0xFFFF_FFFE`, unique in its subsystem, a
//!   block size of 512 or 4096, and a size (when known) that is a non-zero multiple
//!   of the block size; a file namespace without `size` names a path that exists;
//!   UUIDs and NGUIDs are non-zero and unique across the whole configuration;
//! - every number in `[target]` is within the range documented on its field;
//! - pool names are valid storage names and unique, pool paths unique, a pool `size` a
//!   positive multiple of 4096 of at least 10 MiB; the API address is an IP address and
//!   port; a configured `token_file` exists and is not a directory.
//!
//! Errors: the first problem found stops the load, and every [`ConfigError`] renders
//! as `FILE:LINE:COL: field `subsystem[0].namespace[1].block_size`: message`, the
//! field path written with the TOML key names. A TOML syntax error is the one kind
//! that names no field: the text around it is not a tree of fields yet.
//!
//! A `Config` built by hand (the e2e harness does) is validated the same way:
//! `Config::parse(&config.to_toml(), "<built>")`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use uuid::Uuid;

use crate::affinity;

/// NVMe base specification 2.0, §4.5: an NQN is at most 223 bytes.
const NQN_MAX_BYTES: usize = 223;
/// The well-known discovery subsystem NQN (NVMe over Fabrics 1.1, §5.3), served by
/// the target itself.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// 0 and 0xFFFF_FFFF are reserved NSIDs (NVMe base 2.0, §3.2.1.2).
const NSID_MAX: u32 = 0xFFFF_FFFE;
/// Identify Controller SN and MN field widths (NVMe base 2.0, Figure 275).
const SERIAL_MAX_BYTES: usize = 20;
const MODEL_MAX_BYTES: usize = 40;
const BLOCK_SIZES: [u32; 2] = [512, 4096];
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const DEFAULT_REACTORS: usize = 1;
const REACTORS_PER_CPU_MAX: usize = 4;
const DEFAULT_MDTS_BYTES: u32 = 128 * 1024;
const MDTS_BYTES_MIN: u32 = 4096;
const MDTS_BYTES_MAX: u32 = 1 << 20;
const DEFAULT_MAX_QUEUE_ENTRIES: u16 = 128;
const DEFAULT_MAX_IO_QUEUES: u16 = 8;
const DEFAULT_IN_CAPSULE_DATA_BYTES: u32 = 8192;
const DEFAULT_H2C_WINDOW_BYTES: u32 = 512 * 1024;
const H2C_WINDOW_BYTES_MAX: u32 = 1 << 30;
const DEFAULT_C2H_SLICE_BYTES: u32 = 256 * 1024;
const C2H_SLICE_BYTES_MIN: u32 = 4096;
const C2H_SLICE_BYTES_MAX: u32 = 1 << 30;
const DEFAULT_KEEP_ALIVE_MS: u32 = 120_000;
const DEFAULT_BUFFER_POOL_BYTES: u64 = 64 * MIB;
const DEFAULT_BUSY_POLL_US: u32 = 50;
const DEFAULT_DATA_DIR: &str = "./fabriq-data";
const DEFAULT_BLOCK_SIZE: u32 = 4096;
const DEFAULT_NQN: &str = "nqn.2026-11.dev.fabriq:default";
const DEFAULT_IMAGE_BYTES: u64 = GIB;
/// The embedded default pool: a sparse file, so it costs only what volumes write.
const DEFAULT_POOL_NAME: &str = "default";
const DEFAULT_POOL_BYTES: u64 = 16 * GIB;
/// The smallest pool the storage layer lays out with its defaults (one data extent).
const POOL_BYTES_MIN: u64 = 10 * MIB;
/// DESIGN.md: the node API listens on port 8800, on loopback unless configured otherwise.
const DEFAULT_API_ADDRESS: &str = "127.0.0.1:8800";
const DEFAULT_API_BODY_LIMIT_BYTES: u64 = 64 * KIB;
const DEFAULT_API_TIMEOUT_MS: u32 = 30_000;

/// The whole configuration of one `fabriq-target` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[target]`: process-wide settings.
    pub target: TargetSection,
    /// `[[listener]]`: the addresses the target accepts connections on.
    pub listeners: Vec<Listener>,
    /// `[[subsystem]]`: the NVMe subsystems exported; may be empty when volumes are
    /// added later through the node API.
    pub subsystems: Vec<Subsystem>,
    /// `[[pool]]`: devices carved into volumes, opened (or created) at start-up.
    pub pools: Vec<PoolSection>,
    /// `[api]`: the node's REST API.
    pub api: ApiSection,
}

/// `[[pool]]`: one device carved into volumes (the storage layer's pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSection {
    /// The pool's name: 1..=64 ASCII letters, digits, `-`, `_`, `.`, starting with a letter
    /// or digit; unique on the node. A device that already holds a pool must hold one of
    /// this name.
    pub name: String,
    /// A block device (an NVMe namespace, a loop device) or a regular file.
    pub path: PathBuf,
    /// For a file: the size it is created at (sparse) when missing. Ignored for a block
    /// device and for a file that exists. A positive multiple of 4096, at least 10 MiB.
    pub size_bytes: Option<u64>,
    /// Create the pool even over another pool's label, a file system or a partition table.
    /// Default false. Never used on a device that holds a pool of this name: that pool is
    /// opened.
    pub force: bool,
}

/// `[api]`: the node REST API (what the provisioner and operators call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSection {
    /// Default true.
    pub enabled: bool,
    /// Default `127.0.0.1:8800`: loopback, until the operator chooses an address the
    /// provisioner can reach.
    pub address: SocketAddr,
    /// A file holding the bearer token every request but `/v1/health`, `/docs` and
    /// `/openapi.json` must carry. None: the token is `<data_dir>/api-token`, generated
    /// (random, mode 0600) at the first start. Authentication is never off.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted. Default 64 KiB; `1 KiB..=16 MiB`.
    pub body_limit_bytes: u64,
    /// A request not answered within this is answered `503 timeout` (the operation itself
    /// may still complete: look before retrying). Default 30 s; `100..=600_000`.
    pub request_timeout_ms: u32,
}

impl Default for ApiSection {
    fn default() -> ApiSection {
        ApiSection {
            enabled: true,
            address: DEFAULT_API_ADDRESS.parse().expect("a valid address"),
            token_file: None,
            body_limit_bytes: DEFAULT_API_BODY_LIMIT_BYTES,
            request_timeout_ms: DEFAULT_API_TIMEOUT_MS,
        }
    }
}

/// `[target]`: settings of the whole process. Every field may be omitted; the
/// default is given on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSection {
    /// Data-plane threads, each owning one io_uring. Default 1 (or one per CPU in
    /// `cpus`), so that an idle target costs one thread; `1..=4 ×` the CPUs this
    /// process may run on (more than that only adds busy-polling threads fighting for
    /// the same cores).
    pub reactors: usize,
    /// The CPU each reactor runs on: reactor `i` is pinned to `cpus[i]`, and the kernel
    /// workers its io_uring starts inherit that CPU. Empty (the default): reactors go
    /// wherever the scheduler puts them, within the process's own CPU affinity (systemd's
    /// `CPUAffinity=`, `taskset`). Given as a list (`[2, 3]`) or a Linux CPU list
    /// (`"2-3"`, `"0,4-5"`); each CPU at most once and one this process may run on;
    /// with `reactors` set too, one CPU per reactor.
    pub cpus: Vec<usize>,
    /// Largest data transfer of one command, in bytes (Identify Controller MDTS).
    /// Default 128 KiB, what Linux's nvmet advertises and fio's usual block sizes fit
    /// in; a power of two in `4096..=1 MiB` because MDTS is a power of two of the
    /// 4 KiB minimum page size, and each in-flight command may hold this much buffer.
    pub mdts_bytes: u32,
    /// Entries of each I/O submission queue (CAP.MQES + 1). Default 128, the
    /// Linux initiator's default queue depth; `2..=1024` (the spec's minimum is 2;
    /// 1024 bounds the command slots allocated at connect).
    pub max_queue_entries: u16,
    /// I/O queues one controller may create (Set Features, Number of Queues).
    /// Default 8: the Linux initiator opens one queue (one TCP connection) per host
    /// CPU up to this limit, and 8 covers a typical host's parallelism while
    /// bounding what one host pins: (8 + 1 admin) × `max_queue_entries` command
    /// slots. `1..=1024`.
    pub max_io_queues: u16,
    /// Data a host may send inside a command capsule instead of waiting for an R2T
    /// (NVMe/TCP, IOCCSZ). Default 8 KiB, enough for small writes to skip a round
    /// trip (or `mdts_bytes` if that is smaller); a multiple of 16 (IOCCSZ counts
    /// 16-byte units), at most `mdts_bytes`;
    /// 0 disables in-capsule data.
    pub in_capsule_data_bytes: u32,
    /// NVMe/TCP: write data one connection may have asked for with R2Ts and not yet
    /// received. Past it, further R2Ts wait (oldest first) until data arrives; one R2T
    /// always goes out. Default 512 KiB (or `mdts_bytes` if larger): enough to keep a
    /// link busy, small enough that a deep queue of large writes does not flood the
    /// socket's receive buffer, which on loopback made TCP drop, reorder and
    /// retransmit segments (ms-long stalls). At least `mdts_bytes`, at most 1 GiB.
    pub h2c_window_bytes: u32,
    /// NVMe/TCP: while a queue's reads wait long for their data (over 200 µs on
    /// average: a disk busy with large reads), its read data goes out in sends of
    /// at most this many bytes. Between two sends the reactor takes in the commands
    /// the host sent back for the data it already has, so the disk gets them while
    /// the rest of the burst is still on its way, instead of sitting idle through
    /// one large send. Reads that are answered quickly (a null namespace, a file in
    /// memory) are never sliced, so a target limited by its CPU pays nothing.
    /// Default 256 KiB; 0 never slices; otherwise `4096..=1GiB`.
    pub c2h_slice_bytes: u32,
    /// Keep-alive timeout given to a discovery controller whose host's Connect
    /// carries KATO = 0; I/O controllers use the host's KATO. Default 120 s, Linux
    /// nvmet's discovery default; `1000..=3_600_000`.
    pub keep_alive_default_ms: u32,
    /// Bytes of data buffers allocated at start-up for each reactor. Default 64 MiB
    /// (512 maximal 128 KiB transfers in flight per reactor); a multiple of 4096,
    /// at least `mdts_bytes` so that one maximal transfer fits.
    pub buffer_pool_bytes: u64,
    /// The longest a reactor keeps busy-polling its ring after the last activity
    /// before it sleeps in the kernel, in microseconds. Default 50: under load the
    /// next completion arrives sooner than a sleep and wake-up would take, while an
    /// idle target costs next to no CPU. Within it, each reactor adapts its window:
    /// it stops polling while events come too far apart for polling to catch them
    /// (a lightly loaded target, a slow disk) and polls again when they come close.
    /// `0..=1_000_000`; 0 never busy-polls.
    pub busy_poll_us: u32,
    /// Where the target keeps files it creates (the default namespace image).
    /// Default `./fabriq-data`; a relative path is taken from the working directory.
    pub data_dir: PathBuf,
}

impl Default for TargetSection {
    fn default() -> TargetSection {
        TargetSection {
            reactors: DEFAULT_REACTORS,
            cpus: Vec::new(),
            mdts_bytes: DEFAULT_MDTS_BYTES,
            max_queue_entries: DEFAULT_MAX_QUEUE_ENTRIES,
            max_io_queues: DEFAULT_MAX_IO_QUEUES,
            in_capsule_data_bytes: DEFAULT_IN_CAPSULE_DATA_BYTES,
            h2c_window_bytes: DEFAULT_H2C_WINDOW_BYTES,
            c2h_slice_bytes: DEFAULT_C2H_SLICE_BYTES,
            keep_alive_default_ms: DEFAULT_KEEP_ALIVE_MS,
            buffer_pool_bytes: DEFAULT_BUFFER_POOL_BYTES,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

/// A transport binding a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// NVMe/TCP.
    Tcp,
    /// NVMe/RDMA (RDMA CM, reliable connected queue pairs): only in builds with the `rdma`
    /// feature; validation refuses it in others.
    Rdma,
}

impl Transport {
    /// The name written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[listener]]`: one address the target accepts connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Default `tcp`.
    pub transport: Transport,
    /// An IP address and port, `127.0.0.1:4420` or `[::1]:4420`; host names are not
    /// resolved. Port 0 lets the kernel choose (tests).
    pub address: SocketAddr,
    /// The address discovery log entries show, when hosts reach `address` through
    /// NAT or a wildcard; required when `address` is `0.0.0.0` or `[::]`.
    pub advertise: Option<SocketAddr>,
    /// Serves only the discovery subsystem (the well-known port 8009). Default false:
    /// a listener serves the subsystems and discovery alike.
    pub discovery_only: bool,
}

/// `[[subsystem]]`: one NVMe subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsystem {
    /// `nqn.yyyy-mm.reverse.domain:name`, at most 223 bytes.
    pub nqn: String,
    /// Admit every host. Default false; exclusive with a non-empty `hosts`.
    pub allow_any_host: bool,
    /// Host NQNs admitted when `allow_any_host` is false. Default empty.
    pub hosts: Vec<String>,
    /// Identify Controller serial number: printable ASCII, at most 20 bytes. None:
    /// the target derives one.
    pub serial: Option<String>,
    /// Identify Controller model number: printable ASCII, at most 40 bytes. None:
    /// the target's own model string.
    pub model: Option<String>,
    /// `[[subsystem.namespace]]`, in file order.
    pub namespaces: Vec<Namespace>,
}

/// `[[subsystem.namespace]]`: one namespace of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `1..=0xFFFF_FFFE`, unique in its subsystem.
    pub nsid: u32,
    /// Where the blocks live.
    pub backend: Backend,
    /// Logical block size: 512 or 4096. Default 4096, which O_DIRECT accepts on
    /// every device and file system.
    pub block_size: u32,
    /// Namespace UUID (Namespace Identification Descriptor), non-nil, unique.
    pub uuid: Option<Uuid>,
    /// Namespace Globally Unique Identifier, written as 32 hex digits, non-zero, unique.
    pub nguid: Option<[u8; 16]>,
    /// Injected faults (`[[subsystem.namespace.fault]]`).
    pub faults: Vec<Fault>,
}

/// `[[subsystem.namespace.fault]]`: blocks whose reads or writes fail with an I/O error.
/// A test and diagnosis facility (how do hosts and applications take a failing disk?), in the
/// spirit of crucible's fault flags; production configurations have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// First logical block of the range.
    pub lba: u64,
    /// Blocks in the range, at least 1.
    pub blocks: u64,
    /// Reads touching the range fail (Unrecovered Read Error).
    pub reads: bool,
    /// Writes (and Write Zeroes, deallocation) touching the range fail (Write Fault).
    pub writes: bool,
}

/// `backend = "file" | "null" | "mem"` and the keys that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A regular file or a block device, through io_uring. `size` creates a sparse
    /// file of that size when the path is missing; an existing file or device keeps
    /// its own size.
    File { path: PathBuf, size_bytes: Option<u64>, direct: DirectIo },
    /// Reads return zeroes, writes are dropped: benchmarks of the target itself.
    Null { size_bytes: u64 },
    /// Blocks in memory, lost at exit: tests.
    Mem { size_bytes: u64 },
}

impl Backend {
    /// The configured size, if any.
    pub fn size_bytes(&self) -> Option<u64> {
        match self {
            Backend::File { size_bytes, .. } => *size_bytes,
            Backend::Null { size_bytes } | Backend::Mem { size_bytes } => Some(*size_bytes),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::File { .. } => "file",
            Backend::Null { .. } => "null",
            Backend::Mem { .. } => "mem",
        }
    }
}

/// `direct = "auto" | "on" | "off"`: whether a file backend opens with O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// O_DIRECT where the file system accepts it (tmpfs does not), else buffered.
    #[default]
    Auto,
    /// O_DIRECT or refuse to start.
    On,
    /// Buffered I/O through the page cache.
    Off,
}

impl DirectIo {
    /// The name written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DirectIo::Auto => "auto",
            DirectIo::On => "on",
            DirectIo::Off => "off",
        }
    }
}

/// Where in which file an error is: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a configuration was refused. The daemon prints it and does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {error}", .file.display())]
    Read { file: PathBuf, error: std::io::Error },
    /// The TOML parser or the typed decoding refused the text: a syntax error
    /// (`field` is None), an unknown field, a value of the wrong type.
    #[error("{at}: {}{}", field_label(.field), .error.message())]
    Toml { at: Location, field: Option<String>, error: Box<toml::de::Error> },
    /// The text is well-formed TOML of the right types, but a value is not allowed.
    #[error("{at}: field `{field}`: {problem}")]
    Invalid { at: Location, field: String, problem: Problem },
}

fn field_label(field: &Option<String>) -> String {
    match field {
        Some(field) => format!("field `{field}`: "),
        None => String::new(),
    }
}

impl ConfigError {
    /// Where the error is, when it is in the text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Toml { at, .. } | ConfigError::Invalid { at, .. } => Some(at),
        }
    }
}

/// What is wrong with a well-typed value (the semantic checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing: {0}")]
    Missing(&'static str),
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange { value: i64, min: i64, max: i64 },
    #[error("{value} is out of range {min}..={max}")]
    SizeOutOfRange { value: u64, min: u64, max: u64 },
    #[error("{value} reactors for {cpus} CPUs: at most {per_cpu} per CPU", per_cpu = REACTORS_PER_CPU_MAX)]
    TooManyReactors { value: i64, cpus: usize },
    #[error(
        "{reactors} reactors but target.cpus names {}: give one CPU per reactor, or leave reactors out",
        count_of(*cpus, "CPU")
    )]
    ReactorsAndCpus { reactors: usize, cpus: usize },
    #[error("\"{0}\" is not a CPU number or range (a CPU list looks like \"0,4-5\")")]
    BadCpu(String),
    #[error("CPU {0} is listed twice: each reactor needs a CPU of its own")]
    CpuTwice(usize),
    #[error("CPU {cpu} is not one this process may run on (it may run on {allowed})")]
    CpuNotAllowed { cpu: usize, allowed: String },
    #[error("{0} is not a power of two")]
    NotPowerOfTwo(u64),
    #[error("{value} is not a multiple of {of} ({why})")]
    NotMultiple { value: u64, of: u64, why: &'static str },
    #[error("{value} is less than {min} ({why})")]
    TooSmall { value: u64, min: u64, why: &'static str },
    #[error("must not be zero")]
    Zero,
    #[error("{0} is not a supported block size: expected 512 or 4096")]
    BlockSize(i64),
    #[error("\"{value}\" is not one of {expected}")]
    UnknownChoice { value: String, expected: &'static str },
    #[error("transport \"{0}\" is not built into this fabriq-target (build it with `--features {0}`)")]
    TransportNotBuiltIn(Transport),
    #[error(
        "\"{0}\" is not an IP address and port, e.g. \"127.0.0.1:4420\" or \"[::1]:4420\" \
         (host names are not resolved)"
    )]
    BadAddress(String),
    #[error(
        "listening on every address needs `advertise`: discovery log entries must name an \
         address hosts can reach"
    )]
    WildcardNeedsAdvertise,
    #[error("must be an address hosts can connect to: not a wildcard address, not port 0")]
    BadAdvertise,
    #[error("at least one [[listener]] is needed, or no host can reach the target")]
    NoListeners,
    #[error("every listener is discovery_only, so no host can reach the subsystems")]
    NoIoListener,
    #[error("{what} already used by `{first}` (line {first_line})")]
    Duplicate { what: &'static str, first: String, first_line: usize },
    #[error(
        "port {port} is also bound by `{first}` (line {first_line}), and a wildcard address \
         covers every address of its family"
    )]
    PortOverlap { port: u16, first: String, first_line: usize },
    #[error("\"{value}\" is not a valid NQN: {reason}")]
    InvalidNqn { value: String, reason: &'static str },
    #[error("\"{}\" is the discovery subsystem, which the target serves by itself", DISCOVERY_NQN)]
    DiscoveryNqn,
    #[error(
        "allow_any_host = true admits every host, so the `hosts` list would be ignored: \
         remove one of the two"
    )]
    AnyHostWithHosts,
    #[error("must be printable ASCII (it is an Identify Controller string)")]
    NotPrintableAscii,
    #[error("{len} bytes is longer than the {max} bytes NVMe allows")]
    TooLong { len: usize, max: usize },
    #[error("must not be empty")]
    Empty,
    #[error("applies only to backend = \"file\", not \"{0}\"")]
    OnlyForFile(&'static str),
    #[error("{} does not exist, and without `size` the target cannot create it", .0.display())]
    FileMissing(PathBuf),
    #[error("{} is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("\"{0}\" is not a UUID")]
    BadUuid(String),
    #[error("the nil UUID means \"no UUID\" in NVMe: leave the field out instead")]
    NilUuid,
    #[error("\"{0}\" is not 32 hexadecimal digits (16 bytes)")]
    BadNguid(String),
    #[error("an all-zero NGUID means \"no NGUID\" in NVMe: leave the field out instead")]
    ZeroNguid,
    #[error("{} does not exist: write a token (at least 16 characters) into it, or leave `token_file` out to have one generated in data_dir", .0.display())]
    TokenFileMissing(PathBuf),
    #[error("\"{value}\" is not a valid pool name: {problem}")]
    PoolName { value: String, problem: crate::storage::NameProblem },
}

impl Config {
    /// What `fabriq-target` runs with no `--config`: no root, no setup, loopback only.
    ///
    /// - `[target]`: every default of [`TargetSection`], with `data_dir` as given;
    /// - listeners `127.0.0.1:4420` (NVMe/TCP and discovery) and `127.0.0.1:8009`
    ///   (discovery only, the well-known discovery port);
    /// - subsystem `nqn.2026-11.dev.fabriq:default`, `allow_any_host = true`, with
    ///   namespace 1 a file `<data_dir>/default.img` of 1 GiB, created sparse when
    ///   missing, block size 4096, `direct = "auto"`;
    /// - pool `default`: a file `<data_dir>/pool-default.img` of 16 GiB, created sparse
    ///   when missing;
    /// - the node API on `127.0.0.1:8800`, its token generated in `<data_dir>/api-token`.
    pub fn embedded_default(data_dir: &Path) -> Config {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Config {
            target: TargetSection { data_dir: data_dir.to_path_buf(), ..TargetSection::default() },
            listeners: vec![
                Listener { transport: Transport::Tcp, address: loopback(4420), advertise: None, discovery_only: false },
                Listener { transport: Transport::Tcp, address: loopback(8009), advertise: None, discovery_only: true },
            ],
            subsystems: vec![Subsystem {
                nqn: DEFAULT_NQN.to_owned(),
                allow_any_host: true,
                hosts: Vec::new(),
                serial: None,
                model: None,
                namespaces: vec![Namespace {
                    nsid: 1,
                    backend: Backend::File {
                        path: data_dir.join("default.img"),
                        size_bytes: Some(DEFAULT_IMAGE_BYTES),
                        direct: DirectIo::Auto,
                    },
                    block_size: DEFAULT_BLOCK_SIZE,
                    uuid: None,
                    nguid: None,
                    faults: Vec::new(),
                }],
            }],
            pools: vec![PoolSection {
                name: DEFAULT_POOL_NAME.to_owned(),
                path: data_dir.join("pool-default.img"),
                size_bytes: Some(DEFAULT_POOL_BYTES),
                force: false,
            }],
            api: ApiSection::default(),
        }
    }

    /// The file the API token is read from: `[api] token_file`, or `<data_dir>/api-token`.
    pub fn token_path(&self) -> PathBuf {
        self.api.token_file.clone().unwrap_or_else(|| self.target.data_dir.join("api-token"))
    }

    /// Reads and validates the file at `path`; errors name it as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { file: path.to_path_buf(), error })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `file_name` is what errors call the file.
    /// Looks at the file system for one check: a file namespace without `size`
    /// must name an existing path.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let checker = Checker { file: file_name, text };
        let raw: RawConfig = toml::from_str(text).map_err(|error| checker.toml_error(error))?;
        checker.config(&raw)
    }

    /// Renders the configuration as TOML that [`Config::parse`] reads back to an
    /// equal `Config`. Every field is written, defaults included. Paths that are
    /// not UTF-8 are written lossily.
    pub fn to_toml(&self) -> String {
        use toml::{Table, Value};
        let t = &self.target;
        let mut target = Table::new();
        target.insert("reactors".into(), int(t.reactors));
        if !t.cpus.is_empty() {
            target.insert("cpus".into(), Value::Array(t.cpus.iter().map(|&c| int(c)).collect()));
        }
        target.insert("mdts_bytes".into(), int(t.mdts_bytes));
        target.insert("max_queue_entries".into(), int(t.max_queue_entries));
        target.insert("max_io_queues".into(), int(t.max_io_queues));
        target.insert("in_capsule_data_bytes".into(), int(t.in_capsule_data_bytes));
        target.insert("h2c_window_bytes".into(), int(t.h2c_window_bytes));
        target.insert("c2h_slice_bytes".into(), int(t.c2h_slice_bytes));
        target.insert("keep_alive_default_ms".into(), int(t.keep_alive_default_ms));
        target.insert("buffer_pool_bytes".into(), int(t.buffer_pool_bytes));
        target.insert("busy_poll_us".into(), int(t.busy_poll_us));
        target.insert("data_dir".into(), path_value(&t.data_dir));

        let listeners = self.listeners.iter().map(|l| {
            let mut table = Table::new();
            table.insert("transport".into(), Value::from(l.transport.as_str()));
            table.insert("address".into(), Value::from(l.address.to_string()));
            if let Some(advertise) = l.advertise {
                table.insert("advertise".into(), Value::from(advertise.to_string()));
            }
            table.insert("discovery_only".into(), Value::from(l.discovery_only));
            Value::Table(table)
        });

        let subsystems = self.subsystems.iter().map(|s| {
            let mut table = Table::new();
            table.insert("nqn".into(), Value::from(s.nqn.as_str()));
            table.insert("allow_any_host".into(), Value::from(s.allow_any_host));
            let hosts = s.hosts.iter().map(|h| Value::from(h.as_str()));
            table.insert("hosts".into(), Value::Array(hosts.collect()));
            if let Some(serial) = &s.serial {
                table.insert("serial".into(), Value::from(serial.as_str()));
            }
            if let Some(model) = &s.model {
                table.insert("model".into(), Value::from(model.as_str()));
            }
            let namespaces = s.namespaces.iter().map(namespace_table);
            table.insert("namespace".into(), Value::Array(namespaces.collect()));
            Value::Table(table)
        });

        let pools = self.pools.iter().map(|p| {
            let mut table = Table::new();
            table.insert("name".into(), Value::from(p.name.as_str()));
            table.insert("path".into(), path_value(&p.path));
            if let Some(size) = p.size_bytes {
                table.insert("size".into(), int(size));
            }
            table.insert("force".into(), Value::from(p.force));
            Value::Table(table)
        });

        let a = &self.api;
        let mut api = Table::new();
        api.insert("enabled".into(), Value::from(a.enabled));
        api.insert("address".into(), Value::from(a.address.to_string()));
        if let Some(token_file) = &a.token_file {
            api.insert("token_file".into(), path_value(token_file));
        }
        api.insert("body_limit_bytes".into(), int(a.body_limit_bytes));
        api.insert("request_timeout_ms".into(), int(a.request_timeout_ms));

        let mut root = Table::new();
        root.insert("target".into(), Value::Table(target));
        root.insert("api".into(), Value::Table(api));
        root.insert("listener".into(), Value::Array(listeners.collect()));
        root.insert("subsystem".into(), Value::Array(subsystems.collect()));
        root.insert("pool".into(), Value::Array(pools.collect()));
        root.to_string()
    }
}

fn namespace_table(ns: &Namespace) -> toml::Value {
    use toml::Value;
    let mut table = toml::Table::new();
    table.insert("nsid".into(), int(ns.nsid));
    table.insert("backend".into(), Value::from(ns.backend.name()));
    match &ns.backend {
        Backend::File { path, size_bytes, direct } => {
            table.insert("path".into(), path_value(path));
            if let Some(size) = size_bytes {
                table.insert("size".into(), int(*size));
            }
            table.insert("direct".into(), Value::from(direct.as_str()));
        }
        Backend::Null { size_bytes } | Backend::Mem { size_bytes } => {
            table.insert("size".into(), int(*size_bytes));
        }
    }
    table.insert("block_size".into(), int(ns.block_size));
    if let Some(uuid) = ns.uuid {
        table.insert("uuid".into(), Value::from(uuid.to_string()));
    }
    if let Some(nguid) = ns.nguid {
        let hex: String = nguid.iter().map(|b| format!("{b:02x}")).collect();
        table.insert("nguid".into(), Value::from(hex));
    }
    if !ns.faults.is_empty() {
        let faults = ns.faults.iter().map(|f| {
            let mut t = toml::Table::new();
            t.insert("lba".into(), int(f.lba));
            t.insert("blocks".into(), int(f.blocks));
            t.insert("reads".into(), Value::from(f.reads));
            t.insert("writes".into(), Value::from(f.writes));
            Value::Table(t)
        });
        table.insert("fault".into(), Value::Array(faults.collect()));
    }
    Value::Table(table)
}

/// A TOML integer, or a decimal string (which sizes accept) past `i64::MAX`.
fn int<T: TryInto<i64> + ToString + Copy>(value: T) -> toml::Value {
    match value.try_into() {
        Ok(i) => toml::Value::Integer(i),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------
// The raw layer: the text as written, with spans.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    subsystem: Vec<Spanned<RawSubsystem>>,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
    api: Option<Spanned<RawApi>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    size: Option<Spanned<Size>>,
    force: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    enabled: Option<Spanned<bool>>,
    address: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    body_limit_bytes: Option<Spanned<Size>>,
    request_timeout_ms: Option<Spanned<Int>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    reactors: Option<Spanned<Int>>,
    cpus: Option<Spanned<RawCpus>>,
    mdts_bytes: Option<Spanned<Size>>,
    max_queue_entries: Option<Spanned<Int>>,
    max_io_queues: Option<Spanned<Int>>,
    in_capsule_data_bytes: Option<Spanned<Size>>,
    h2c_window_bytes: Option<Spanned<Size>>,
    c2h_slice_bytes: Option<Spanned<Size>>,
    keep_alive_default_ms: Option<Spanned<Int>>,
    buffer_pool_bytes: Option<Spanned<Size>>,
    busy_poll_us: Option<Spanned<Int>>,
    data_dir: Option<Spanned<String>>,
}

/// `target.cpus`: a list of CPU numbers, or a Linux CPU list such as `"0,4-5"`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a list of CPU numbers, or a CPU list such as \"0,4-5\"")]
enum RawCpus {
    List(Vec<i64>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    transport: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    discovery_only: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubsystem {
    nqn: Option<Spanned<String>>,
    allow_any_host: Option<Spanned<bool>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    serial: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    #[serde(default)]
    namespace: Vec<Spanned<RawNamespace>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    nsid: Option<Spanned<Int>>,
    backend: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    size: Option<Spanned<Size>>,
    direct: Option<Spanned<String>>,
    block_size: Option<Spanned<Int>>,
    uuid: Option<Spanned<String>>,
    nguid: Option<Spanned<String>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    lba: Option<Spanned<Int>>,
    blocks: Option<Spanned<Int>>,
    reads: Option<Spanned<bool>>,
    writes: Option<Spanned<bool>>,
}

/// A TOML integer; its own type so that a wrong type reads "expected an integer",
/// not a Rust type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Int, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Int, E> {
                Ok(Int(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Int, E> {
                i64::try_from(value).map(Int).map_err(|_| E::custom(format!("{value} does not fit in 64 bits")))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A byte count written as an integer or a string: `4096`, `"4096"`, `"512MiB"`,
/// `"1GiB"`, `"100GB"`. See [`fabriq_units::parse_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes: an integer, or a string such as \"512MiB\" or \"100GB\"")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Size, E> {
                u64::try_from(value)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {value}: a size is not negative")))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Size, E> {
                Ok(Size(value))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Size, E> {
                fabriq_units::parse_size(value)
                    .map(Size)
                    .map_err(|e| E::custom(format!("invalid size \"{value}\": {e}")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `1 CPU`, `2 CPUs`.
fn count_of(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

// ---------------------------------------------------------------------------
// Validation: raw -> typed, every error with its place.

struct Checker<'t> {
    file: &'t str,
    text: &'t str,
}

/// A value's path and line, kept to name the first holder of a duplicate.
type Seen = (String, usize);

impl Checker<'_> {
    fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.location(span.start).line
    }

    fn invalid(&self, span: Range<usize>, field: String, problem: Problem) -> ConfigError {
        ConfigError::Invalid { at: self.location(span.start), field, problem }
    }

    fn toml_error(&self, error: toml::de::Error) -> ConfigError {
        let offset = error.span().map_or(0, |span| span.start);
        ConfigError::Toml { at: self.location(offset), field: field_at(self.text, offset), error: Box::new(error) }
    }

    /// An integer field within `min..=max`, or `default` when absent.
    fn int<T>(&self, value: Option<&Spanned<Int>>, field: &str, min: T, max: T, default: T) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + Into<i64> + PartialOrd + Copy,
    {
        let Some(value) = value else {
            return Ok(default);
        };
        let number = value.get_ref().0;
        match T::try_from(number) {
            Ok(v) if min <= v && v <= max => Ok(v),
            _ => Err(self.invalid(
                value.span(),
                field.to_owned(),
                Problem::OutOfRange { value: number, min: min.into(), max: max.into() },
            )),
        }
    }

    /// A size field within `min..=max`, or `default` when absent.
    fn size<T>(&self, value: Option<&Spanned<Size>>, field: &str, min: T, max: T, default: T) -> Result<T, ConfigError>
    where
        T: TryFrom<u64> + Into<u64> + PartialOrd + Copy,
    {
        let Some(value) = value else {
            return Ok(default);
        };
        let bytes = value.get_ref().0;
        match T::try_from(bytes) {
            Ok(v) if min <= v && v <= max => Ok(v),
            _ => Err(self.invalid(
                value.span(),
                field.to_owned(),
                Problem::SizeOutOfRange { value: bytes, min: min.into(), max: max.into() },
            )),
        }
    }

    fn config(&self, raw: &RawConfig) -> Result<Config, ConfigError> {
        let target = match &raw.target {
            Some(target) => self.target(target.get_ref())?,
            None => TargetSection::default(),
        };
        let listeners = self.listeners(&raw.listener, !raw.subsystem.is_empty())?;
        let subsystems = self.subsystems(&raw.subsystem)?;
        let pools = self.pools(&raw.pool)?;
        let api = match &raw.api {
            Some(api) => self.api(api.get_ref())?,
            None => ApiSection::default(),
        };
        Ok(Config { target, listeners, subsystems, pools, api })
    }

    fn pools(&self, raw: &[Spanned<RawPool>]) -> Result<Vec<PoolSection>, ConfigError> {
        let mut pools = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, Seen> = HashMap::new();
        let mut paths: HashMap<PathBuf, Seen> = HashMap::new();
        for (i, item) in raw.iter().enumerate() {
            let prefix = format!("pool[{i}]");
            let raw = item.get_ref();
            let Some(name) = &raw.name else {
                return Err(self.invalid(
                    item.span(),
                    format!("{prefix}.name"),
                    Problem::Missing("the pool's name, e.g. \"nvme0\""),
                ));
            };
            let field = format!("{prefix}.name");
            crate::storage::Name::new(name.get_ref()).map_err(|problem| {
                self.invalid(name.span(), field.clone(), Problem::PoolName { value: name.get_ref().clone(), problem })
            })?;
            if let Some((first, first_line)) = names.get(name.get_ref()) {
                return Err(self.invalid(
                    name.span(),
                    field,
                    Problem::Duplicate { what: "pool name", first: first.clone(), first_line: *first_line },
                ));
            }
            names.insert(name.get_ref().clone(), (field, self.line(&name.span())));

            let field = format!("{prefix}.path");
            let Some(path) = &raw.path else {
                return Err(self.invalid(
                    item.span(),
                    field,
                    Problem::Missing("the block device or file the pool lives on"),
                ));
            };
            let path_buf = PathBuf::from(path.get_ref());
            let problem = match std::fs::metadata(&path_buf) {
                _ if path.get_ref().is_empty() => Some(Problem::Empty),
                Ok(meta) if meta.is_dir() => Some(Problem::IsDirectory(path_buf.clone())),
                Err(_) if raw.size.is_none() => Some(Problem::FileMissing(path_buf.clone())),
                Ok(_) | Err(_) => None,
            };
            if let Some(problem) = problem {
                return Err(self.invalid(path.span(), field, problem));
            }
            if let Some((first, first_line)) = paths.get(&path_buf) {
                return Err(self.invalid(
                    path.span(),
                    field,
                    Problem::Duplicate { what: "pool path", first: first.clone(), first_line: *first_line },
                ));
            }
            paths.insert(path_buf.clone(), (field, self.line(&path.span())));

            let field = format!("{prefix}.size");
            let size_bytes = match &raw.size {
                None => None,
                Some(size) => {
                    let bytes = self.size(Some(size), &field, POOL_BYTES_MIN, u64::MAX, 0)?;
                    self.ensure(Some(size), &field, bytes % 4096 == 0, || Problem::NotMultiple {
                        value: bytes,
                        of: 4096,
                        why: "a pool file is whole 4 KiB blocks",
                    })?;
                    Some(bytes)
                }
            };
            let force = raw.force.as_ref().is_some_and(|f| *f.get_ref());
            pools.push(PoolSection { name: name.get_ref().clone(), path: path_buf, size_bytes, force });
        }
        Ok(pools)
    }

    fn api(&self, raw: &RawApi) -> Result<ApiSection, ConfigError> {
        let defaults = ApiSection::default();
        let address = match &raw.address {
            Some(text) => self.socket_addr(text, "api.address")?,
            None => defaults.address,
        };
        let token_file = match &raw.token_file {
            None => None,
            Some(path) => {
                let path_buf = PathBuf::from(path.get_ref());
                let problem = match std::fs::metadata(&path_buf) {
                    _ if path.get_ref().is_empty() => Some(Problem::Empty),
                    Ok(meta) if meta.is_dir() => Some(Problem::IsDirectory(path_buf.clone())),
                    Err(_) => Some(Problem::TokenFileMissing(path_buf.clone())),
                    Ok(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(self.invalid(path.span(), "api.token_file".into(), problem));
                }
                Some(path_buf)
            }
        };
        let limit = raw.body_limit_bytes.as_ref();
        let body_limit_bytes = self.size(limit, "api.body_limit_bytes", KIB, 16 * MIB, DEFAULT_API_BODY_LIMIT_BYTES)?;
        let timeout = raw.request_timeout_ms.as_ref();
        let request_timeout_ms =
            self.int(timeout, "api.request_timeout_ms", 100u32, 600_000, DEFAULT_API_TIMEOUT_MS)?;
        Ok(ApiSection {
            enabled: raw.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            address,
            token_file,
            body_limit_bytes,
            request_timeout_ms,
        })
    }

    /// Err(`problem` at `value`) unless `ok`; an absent field took its default,
    /// which needs no check.
    fn ensure<V>(
        &self,
        value: Option<&Spanned<V>>,
        field: &str,
        ok: bool,
        problem: impl FnOnce() -> Problem,
    ) -> Result<(), ConfigError> {
        match value {
            Some(value) if !ok => Err(self.invalid(value.span(), field.to_owned(), problem())),
            _ => Ok(()),
        }
    }

    fn target(&self, raw: &RawTarget) -> Result<TargetSection, ConfigError> {
        let cpus = self.cpus(raw.cpus.as_ref())?;
        let mut reactors = self.reactors(raw.reactors.as_ref())?;
        match &raw.reactors {
            None if !cpus.is_empty() => reactors = cpus.len(),
            Some(value) if !cpus.is_empty() && reactors != cpus.len() => {
                let problem = Problem::ReactorsAndCpus { reactors, cpus: cpus.len() };
                return Err(self.invalid(value.span(), "target.reactors".into(), problem));
            }
            _ => {}
        }

        let field = "target.mdts_bytes";
        let mdts = raw.mdts_bytes.as_ref();
        let mdts_bytes = self.size(mdts, field, MDTS_BYTES_MIN, MDTS_BYTES_MAX, DEFAULT_MDTS_BYTES)?;
        self.ensure(mdts, field, mdts_bytes.is_power_of_two(), || Problem::NotPowerOfTwo(mdts_bytes.into()))?;

        let entries = raw.max_queue_entries.as_ref();
        let max_queue_entries = self.int(entries, "target.max_queue_entries", 2u16, 1024, DEFAULT_MAX_QUEUE_ENTRIES)?;
        let queues = raw.max_io_queues.as_ref();
        let max_io_queues = self.int(queues, "target.max_io_queues", 1u16, 1024, DEFAULT_MAX_IO_QUEUES)?;

        let field = "target.in_capsule_data_bytes";
        let icd = raw.in_capsule_data_bytes.as_ref();
        let icd_default = DEFAULT_IN_CAPSULE_DATA_BYTES.min(mdts_bytes);
        let in_capsule_data_bytes = self.size(icd, field, 0u32, mdts_bytes, icd_default)?;
        self.ensure(icd, field, in_capsule_data_bytes % 16 == 0, || Problem::NotMultiple {
            value: in_capsule_data_bytes.into(),
            of: 16,
            why: "NVMe/TCP counts in-capsule data in 16-byte units",
        })?;

        let window = raw.h2c_window_bytes.as_ref();
        let window_default = DEFAULT_H2C_WINDOW_BYTES.max(mdts_bytes);
        let h2c_window_bytes =
            self.size(window, "target.h2c_window_bytes", mdts_bytes, H2C_WINDOW_BYTES_MAX, window_default)?;

        let field = "target.c2h_slice_bytes";
        let slice = raw.c2h_slice_bytes.as_ref();
        let c2h_slice_bytes = self.size(slice, field, 0u32, C2H_SLICE_BYTES_MAX, DEFAULT_C2H_SLICE_BYTES)?;
        self.ensure(slice, field, c2h_slice_bytes == 0 || c2h_slice_bytes >= C2H_SLICE_BYTES_MIN, || {
            Problem::TooSmall {
                value: c2h_slice_bytes.into(),
                min: C2H_SLICE_BYTES_MIN.into(),
                why: "or 0, which never slices",
            }
        })?;

        let keep_alive = raw.keep_alive_default_ms.as_ref();
        let keep_alive_default_ms =
            self.int(keep_alive, "target.keep_alive_default_ms", 1000u32, 3_600_000, DEFAULT_KEEP_ALIVE_MS)?;

        let field = "target.buffer_pool_bytes";
        let pool = raw.buffer_pool_bytes.as_ref();
        let buffer_pool_bytes = self.size(pool, field, 0u64, u64::MAX, DEFAULT_BUFFER_POOL_BYTES)?;
        let mdts = u64::from(mdts_bytes);
        self.ensure(pool, field, buffer_pool_bytes >= mdts, || Problem::TooSmall {
            value: buffer_pool_bytes,
            min: mdts,
            why: "mdts_bytes: one maximal transfer must fit",
        })?;
        self.ensure(pool, field, buffer_pool_bytes % 4096 == 0, || Problem::NotMultiple {
            value: buffer_pool_bytes,
            of: 4096,
            why: "buffers are whole pages",
        })?;

        let poll = raw.busy_poll_us.as_ref();
        let busy_poll_us = self.int(poll, "target.busy_poll_us", 0u32, 1_000_000, DEFAULT_BUSY_POLL_US)?;

        let dir = raw.data_dir.as_ref();
        let data_dir = dir.map_or(DEFAULT_DATA_DIR, |d| d.get_ref().as_str());
        self.ensure(dir, "target.data_dir", !data_dir.is_empty(), || Problem::Empty)?;

        Ok(TargetSection {
            reactors,
            cpus,
            mdts_bytes,
            max_queue_entries,
            max_io_queues,
            in_capsule_data_bytes,
            h2c_window_bytes,
            c2h_slice_bytes,
            keep_alive_default_ms,
            buffer_pool_bytes,
            busy_poll_us,
            data_dir: PathBuf::from(data_dir),
        })
    }

    /// `1..=4 ×` the CPUs this process may run on, as of this check.
    fn reactors(&self, value: Option<&Spanned<Int>>) -> Result<usize, ConfigError> {
        let Some(value) = value else {
            return Ok(DEFAULT_REACTORS);
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = cpus.saturating_mul(REACTORS_PER_CPU_MAX);
        let n = value.get_ref().0;
        let problem = match usize::try_from(n) {
            Ok(reactors) if (1..=max).contains(&reactors) => return Ok(reactors),
            Ok(reactors) if reactors > max => Problem::TooManyReactors { value: n, cpus },
            _ => Problem::OutOfRange { value: n, min: 1, max: i64::try_from(max).unwrap_or(i64::MAX) },
        };
        Err(self.invalid(value.span(), "target.reactors".into(), problem))
    }

    /// The CPUs of `target.cpus`, in order: each once, each one this process may run on.
    fn cpus(&self, value: Option<&Spanned<RawCpus>>) -> Result<Vec<usize>, ConfigError> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        let invalid = |problem| self.invalid(value.span(), "target.cpus".into(), problem);
        let cpus = match value.get_ref() {
            RawCpus::List(list) => list
                .iter()
                .map(|&n| usize::try_from(n).map_err(|_| invalid(Problem::BadCpu(n.to_string()))))
                .collect::<Result<Vec<usize>, _>>()?,
            RawCpus::Text(text) => affinity::parse_list(text).map_err(|item| invalid(Problem::BadCpu(item)))?,
        };
        if cpus.is_empty() {
            return Err(invalid(Problem::Empty));
        }
        let allowed = affinity::allowed();
        for (i, &cpu) in cpus.iter().enumerate() {
            if cpus[..i].contains(&cpu) {
                return Err(invalid(Problem::CpuTwice(cpu)));
            }
            if !allowed.contains(&cpu) {
                return Err(invalid(Problem::CpuNotAllowed { cpu, allowed: affinity::list_text(&allowed) }));
            }
        }
        Ok(cpus)
    }

    fn listeners(&self, raw: &[Spanned<RawListener>], have_subsystems: bool) -> Result<Vec<Listener>, ConfigError> {
        if raw.is_empty() {
            return Err(self.invalid(0..0, "listener".into(), Problem::NoListeners));
        }
        let mut listeners: Vec<Listener> = Vec::with_capacity(raw.len());
        // Address and line of each listener so far, for duplicate and overlap checks.
        // TCP and RDMA CM ports are separate spaces: only listeners of one transport collide.
        let mut seen: Vec<(SocketAddr, usize, Transport)> = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let prefix = format!("listener[{i}]");
            let listener = self.listener(item, &prefix)?;
            let address_span = item.get_ref().address.as_ref().map_or(item.span(), |a| a.span());
            for (j, (other, line, transport)) in seen.iter().enumerate() {
                if *transport != listener.transport {
                    continue;
                }
                let a = listener.address;
                if a.port() != 0 && a == *other {
                    return Err(self.invalid(
                        address_span,
                        format!("{prefix}.address"),
                        Problem::Duplicate {
                            what: "address",
                            first: format!("listener[{j}].address"),
                            first_line: *line,
                        },
                    ));
                }
                let same_family = a.is_ipv4() == other.is_ipv4();
                let wildcard = a.ip().is_unspecified() || other.ip().is_unspecified();
                if a.port() != 0 && a.port() == other.port() && same_family && wildcard {
                    return Err(self.invalid(
                        address_span,
                        format!("{prefix}.address"),
                        Problem::PortOverlap {
                            port: a.port(),
                            first: format!("listener[{j}].address"),
                            first_line: *line,
                        },
                    ));
                }
            }
            seen.push((listener.address, self.line(&address_span), listener.transport));
            listeners.push(listener);
        }
        if have_subsystems && listeners.iter().all(|l| l.discovery_only) {
            let last = raw.last().map_or(0..0, |l| l.span());
            return Err(self.invalid(last, "listener".into(), Problem::NoIoListener));
        }
        Ok(listeners)
    }

    fn listener(&self, item: &Spanned<RawListener>, prefix: &str) -> Result<Listener, ConfigError> {
        let raw = item.get_ref();
        let transport = match &raw.transport {
            None => Transport::Tcp,
            Some(value) => match value.get_ref().as_str() {
                "tcp" => Transport::Tcp,
                "rdma" if cfg!(feature = "rdma") => Transport::Rdma,
                "rdma" => {
                    return Err(self.invalid(
                        value.span(),
                        format!("{prefix}.transport"),
                        Problem::TransportNotBuiltIn(Transport::Rdma),
                    ));
                }
                other => {
                    return Err(self.invalid(
                        value.span(),
                        format!("{prefix}.transport"),
                        Problem::UnknownChoice { value: other.to_owned(), expected: "\"tcp\", \"rdma\"" },
                    ));
                }
            },
        };
        let Some(address_text) = &raw.address else {
            return Err(self.invalid(
                item.span(),
                format!("{prefix}.address"),
                Problem::Missing("the IP address and port to listen on, e.g. \"127.0.0.1:4420\""),
            ));
        };
        let address = self.socket_addr(address_text, &format!("{prefix}.address"))?;
        let advertise = match &raw.advertise {
            None => None,
            Some(text) => {
                let field = format!("{prefix}.advertise");
                let advertise = self.socket_addr(text, &field)?;
                if advertise.ip().is_unspecified() || advertise.port() == 0 {
                    return Err(self.invalid(text.span(), field, Problem::BadAdvertise));
                }
                Some(advertise)
            }
        };
        if address.ip().is_unspecified() && advertise.is_none() {
            return Err(self.invalid(
                address_text.span(),
                format!("{prefix}.address"),
                Problem::WildcardNeedsAdvertise,
            ));
        }
        Ok(Listener {
            transport,
            address,
            advertise,
            discovery_only: raw.discovery_only.as_ref().is_some_and(|d| *d.get_ref()),
        })
    }

    fn socket_addr(&self, text: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
        text.get_ref()
            .parse()
            .map_err(|_| self.invalid(text.span(), field.to_owned(), Problem::BadAddress(text.get_ref().clone())))
    }

    fn subsystems(&self, raw: &[Spanned<RawSubsystem>]) -> Result<Vec<Subsystem>, ConfigError> {
        let mut subsystems = Vec::with_capacity(raw.len());
        let mut nqns: HashMap<String, Seen> = HashMap::new();
        // NVMe requires UUIDs and NGUIDs to be unique beyond one subsystem.
        let mut ids = Ids::default();
        for (i, item) in raw.iter().enumerate() {
            let prefix = format!("subsystem[{i}]");
            let subsystem = self.subsystem(item, &prefix, &mut ids)?;
            let span = item.get_ref().nqn.as_ref().map_or(item.span(), |n| n.span());
            if let Some((first, first_line)) = nqns.get(&subsystem.nqn) {
                return Err(self.invalid(
                    span,
                    format!("{prefix}.nqn"),
                    Problem::Duplicate { what: "NQN", first: first.clone(), first_line: *first_line },
                ));
            }
            nqns.insert(subsystem.nqn.clone(), (format!("{prefix}.nqn"), self.line(&span)));
            subsystems.push(subsystem);
        }
        Ok(subsystems)
    }

    fn subsystem(&self, item: &Spanned<RawSubsystem>, prefix: &str, ids: &mut Ids) -> Result<Subsystem, ConfigError> {
        let raw = item.get_ref();
        let Some(nqn) = &raw.nqn else {
            return Err(self.invalid(
                item.span(),
                format!("{prefix}.nqn"),
                Problem::Missing("the subsystem's NQN, e.g. \"nqn.2026-11.dev.fabriq:demo\""),
            ));
        };
        self.nqn(nqn, &format!("{prefix}.nqn"))?;
        if nqn.get_ref() == DISCOVERY_NQN {
            return Err(self.invalid(nqn.span(), format!("{prefix}.nqn"), Problem::DiscoveryNqn));
        }

        let allow_any_host = raw.allow_any_host.as_ref().is_some_and(|a| *a.get_ref());
        let mut hosts: Vec<String> = Vec::new();
        if let Some(list) = &raw.hosts {
            if allow_any_host && !list.get_ref().is_empty() {
                return Err(self.invalid(list.span(), format!("{prefix}.hosts"), Problem::AnyHostWithHosts));
            }
            let mut seen: HashMap<&str, Seen> = HashMap::new();
            for (j, host) in list.get_ref().iter().enumerate() {
                let field = format!("{prefix}.hosts[{j}]");
                self.nqn(host, &field)?;
                if let Some((first, first_line)) = seen.get(host.get_ref().as_str()) {
                    return Err(self.invalid(
                        host.span(),
                        field,
                        Problem::Duplicate { what: "host NQN", first: first.clone(), first_line: *first_line },
                    ));
                }
                seen.insert(host.get_ref(), (field, self.line(&host.span())));
                hosts.push(host.get_ref().clone());
            }
        }

        let serial = self.ascii(raw.serial.as_ref(), &format!("{prefix}.serial"), SERIAL_MAX_BYTES)?;
        let model = self.ascii(raw.model.as_ref(), &format!("{prefix}.model"), MODEL_MAX_BYTES)?;

        let mut namespaces = Vec::with_capacity(raw.namespace.len());
        let mut nsids: HashMap<u32, Seen> = HashMap::new();
        for (j, ns) in raw.namespace.iter().enumerate() {
            let ns_prefix = format!("{prefix}.namespace[{j}]");
            let namespace = self.namespace(ns, &ns_prefix, ids)?;
            let span = ns.get_ref().nsid.as_ref().map_or(ns.span(), |n| n.span());
            if let Some((first, first_line)) = nsids.get(&namespace.nsid) {
                return Err(self.invalid(
                    span,
                    format!("{ns_prefix}.nsid"),
                    Problem::Duplicate { what: "NSID", first: first.clone(), first_line: *first_line },
                ));
            }
            nsids.insert(namespace.nsid, (format!("{ns_prefix}.nsid"), self.line(&span)));
            namespaces.push(namespace);
        }

        Ok(Subsystem { nqn: nqn.get_ref().clone(), allow_any_host, hosts, serial, model, namespaces })
    }

    fn nqn(&self, value: &Spanned<String>, field: &str) -> Result<(), ConfigError> {
        check_nqn(value.get_ref()).map_err(|reason| {
            self.invalid(value.span(), field.to_owned(), Problem::InvalidNqn { value: value.get_ref().clone(), reason })
        })
    }

    fn ascii(&self, value: Option<&Spanned<String>>, field: &str, max: usize) -> Result<Option<String>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = value.get_ref();
        let problem = if text.is_empty() {
            Some(Problem::Empty)
        } else if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            Some(Problem::NotPrintableAscii)
        } else if text.len() > max {
            Some(Problem::TooLong { len: text.len(), max })
        } else {
            None
        };
        match problem {
            Some(problem) => Err(self.invalid(value.span(), field.to_owned(), problem)),
            None => Ok(Some(text.clone())),
        }
    }

    fn namespace(&self, item: &Spanned<RawNamespace>, prefix: &str, ids: &mut Ids) -> Result<Namespace, ConfigError> {
        let raw = item.get_ref();
        let Some(nsid_value) = &raw.nsid else {
            return Err(self.invalid(
                item.span(),
                format!("{prefix}.nsid"),
                Problem::Missing("the namespace ID, 1..=4294967294"),
            ));
        };
        let nsid = self.int(Some(nsid_value), &format!("{prefix}.nsid"), 1u32, NSID_MAX, 1)?;

        let block_size = match &raw.block_size {
            None => DEFAULT_BLOCK_SIZE,
            Some(value) => match u32::try_from(value.get_ref().0) {
                Ok(size) if BLOCK_SIZES.contains(&size) => size,
                _ => {
                    return Err(self.invalid(
                        value.span(),
                        format!("{prefix}.block_size"),
                        Problem::BlockSize(value.get_ref().0),
                    ));
                }
            },
        };

        let size_bytes = match &raw.size {
            None => None,
            Some(value) => {
                let field = format!("{prefix}.size");
                let bytes = value.get_ref().0;
                if bytes == 0 {
                    return Err(self.invalid(value.span(), field, Problem::Zero));
                }
                if bytes % u64::from(block_size) != 0 {
                    return Err(self.invalid(
                        value.span(),
                        field,
                        Problem::NotMultiple { value: bytes, of: block_size.into(), why: "the block size" },
                    ));
                }
                Some(bytes)
            }
        };

        let backend = self.backend(item, prefix, size_bytes)?;
        let uuid = self.uuid(raw.uuid.as_ref(), prefix, ids)?;
        let nguid = self.nguid(raw.nguid.as_ref(), prefix, ids)?;
        let faults = raw
            .fault
            .iter()
            .enumerate()
            .map(|(i, f)| self.fault(f, &format!("{prefix}.fault[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Namespace { nsid, backend, block_size, uuid, nguid, faults })
    }

    fn fault(&self, item: &Spanned<RawFault>, prefix: &str) -> Result<Fault, ConfigError> {
        let raw = item.get_ref();
        let Some(lba) = &raw.lba else {
            return Err(self.invalid(
                item.span(),
                format!("{prefix}.lba"),
                Problem::Missing("the first block of the faulty range"),
            ));
        };
        let lba = self.int(Some(lba), &format!("{prefix}.lba"), 0i64, i64::MAX, 0)? as u64;
        let blocks = self.int(raw.blocks.as_ref(), &format!("{prefix}.blocks"), 1i64, i64::MAX, 1)? as u64;
        let reads = raw.reads.as_ref().is_none_or(|v| *v.get_ref());
        let writes = raw.writes.as_ref().is_none_or(|v| *v.get_ref());
        Ok(Fault { lba, blocks, reads, writes })
    }

    fn backend(
        &self,
        item: &Spanned<RawNamespace>,
        prefix: &str,
        size_bytes: Option<u64>,
    ) -> Result<Backend, ConfigError> {
        let raw = item.get_ref();
        let Some(kind) = &raw.backend else {
            return Err(self.invalid(
                item.span(),
                format!("{prefix}.backend"),
                Problem::Missing("where the blocks live: \"file\", \"null\" or \"mem\""),
            ));
        };
        let missing_size = || {
            self.invalid(
                item.span(),
                format!("{prefix}.size"),
                Problem::Missing("a null or mem namespace has no device to take its size from"),
            )
        };
        let backend = match kind.get_ref().as_str() {
            "file" => self.file_backend(item, prefix, size_bytes)?,
            "null" => Backend::Null { size_bytes: size_bytes.ok_or_else(missing_size)? },
            "mem" => Backend::Mem { size_bytes: size_bytes.ok_or_else(missing_size)? },
            other => {
                return Err(self.invalid(
                    kind.span(),
                    format!("{prefix}.backend"),
                    Problem::UnknownChoice { value: other.to_owned(), expected: "\"file\", \"null\", \"mem\"" },
                ));
            }
        };
        if !matches!(backend, Backend::File { .. }) {
            for (key, value) in [("path", &raw.path), ("direct", &raw.direct)] {
                let field = format!("{prefix}.{key}");
                self.ensure(value.as_ref(), &field, false, || Problem::OnlyForFile(backend.name()))?;
            }
        }
        Ok(backend)
    }

    /// `path` must be set; without `size`, it must exist; it is never a directory.
    fn file_backend(
        &self,
        item: &Spanned<RawNamespace>,
        prefix: &str,
        size_bytes: Option<u64>,
    ) -> Result<Backend, ConfigError> {
        let raw = item.get_ref();
        let field = format!("{prefix}.path");
        let Some(path) = &raw.path else {
            return Err(self.invalid(
                item.span(),
                field,
                Problem::Missing("the file or block device that holds the blocks"),
            ));
        };
        let path_buf = PathBuf::from(path.get_ref());
        let problem = match std::fs::metadata(&path_buf) {
            _ if path.get_ref().is_empty() => Some(Problem::Empty),
            Ok(meta) if meta.is_dir() => Some(Problem::IsDirectory(path_buf.clone())),
            Err(_) if size_bytes.is_none() => Some(Problem::FileMissing(path_buf.clone())),
            Ok(_) | Err(_) => None,
        };
        if let Some(problem) = problem {
            return Err(self.invalid(path.span(), field, problem));
        }
        let direct = match raw.direct.as_ref().map(|d| (d, d.get_ref().as_str())) {
            None | Some((_, "auto")) => DirectIo::Auto,
            Some((_, "on")) => DirectIo::On,
            Some((_, "off")) => DirectIo::Off,
            Some((value, other)) => {
                return Err(self.invalid(
                    value.span(),
                    format!("{prefix}.direct"),
                    Problem::UnknownChoice { value: other.to_owned(), expected: "\"auto\", \"on\", \"off\"" },
                ));
            }
        };
        Ok(Backend::File { path: path_buf, size_bytes, direct })
    }

    fn uuid(&self, value: Option<&Spanned<String>>, prefix: &str, ids: &mut Ids) -> Result<Option<Uuid>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let field = format!("{prefix}.uuid");
        let uuid = Uuid::try_parse(value.get_ref())
            .map_err(|_| self.invalid(value.span(), field.clone(), Problem::BadUuid(value.get_ref().clone())))?;
        if uuid.is_nil() {
            return Err(self.invalid(value.span(), field, Problem::NilUuid));
        }
        if let Some((first, first_line)) = ids.uuids.get(&uuid) {
            return Err(self.invalid(
                value.span(),
                field,
                Problem::Duplicate { what: "UUID", first: first.clone(), first_line: *first_line },
            ));
        }
        ids.uuids.insert(uuid, (field, self.line(&value.span())));
        Ok(Some(uuid))
    }

    fn nguid(
        &self,
        value: Option<&Spanned<String>>,
        prefix: &str,
        ids: &mut Ids,
    ) -> Result<Option<[u8; 16]>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let field = format!("{prefix}.nguid");
        let nguid = parse_nguid(value.get_ref())
            .ok_or_else(|| self.invalid(value.span(), field.clone(), Problem::BadNguid(value.get_ref().clone())))?;
        if nguid == [0; 16] {
            return Err(self.invalid(value.span(), field, Problem::ZeroNguid));
        }
        if let Some((first, first_line)) = ids.nguids.get(&nguid) {
            return Err(self.invalid(
                value.span(),
                field,
                Problem::Duplicate { what: "NGUID", first: first.clone(), first_line: *first_line },
            ));
        }
        ids.nguids.insert(nguid, (field, self.line(&value.span())));
        Ok(Some(nguid))
    }
}

/// Namespace identifiers seen so far in the whole configuration.
#[derive(Default)]
struct Ids {
    uuids: HashMap<Uuid, Seen>,
    nguids: HashMap<[u8; 16], Seen>,
}

fn parse_nguid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut nguid = [0u8; 16];
    for (out, pair) in nguid.iter_mut().zip(bytes.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(nguid)
}

/// The NQN syntax of NVMe base 2.0 §4.5, simply: `nqn.`, a `yyyy-mm` date, `.`, a
/// reverse domain name, then anything after a `:`; at most 223 bytes, no control
/// characters. The NVMe types module has the full `Nqn` type; this one only has to
/// catch typing mistakes in a configuration file.
fn check_nqn(nqn: &str) -> Result<(), &'static str> {
    if nqn.len() > NQN_MAX_BYTES {
        return Err("longer than 223 bytes");
    }
    if nqn.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    let rest = nqn.strip_prefix("nqn.").ok_or("does not start with \"nqn.\"")?;
    let date = rest.get(..8).ok_or("no \"yyyy-mm.\" date after \"nqn.\"")?;
    let d = date.as_bytes();
    let digits = |r: Range<usize>| d[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && d[4] == b'-' && digits(5..7) && d[7] == b'.') {
        return Err("no \"yyyy-mm.\" date after \"nqn.\"");
    }
    let month = (d[5] - b'0') * 10 + (d[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err("the month of the date is not 01..12");
    }
    let domain = rest[8..].split(':').next().unwrap_or("");
    let domain_ok = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !domain_ok {
        return Err("no reverse domain name after the date");
    }
    Ok(())
}

/// The path of the deepest key or value whose span holds `offset`, written with
/// TOML key names and array indices: `subsystem[0].namespace[1].block_size`. None
/// when the text does not parse (a syntax error) or nothing holds the offset.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<(usize, String)> = None;
    walk_table(root.get_ref(), "", offset, &mut best);
    best.map(|(_, path)| path)
}

fn consider(span: Range<usize>, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    let holds = span.contains(&offset) || (span.is_empty() && span.start == offset);
    let len = span.len();
    if holds && best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
        *best = Some((len, path.to_owned()));
    }
}

fn walk_table(table: &DeTable<'_>, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    for (key, value) in table.iter() {
        let key_path = if path.is_empty() { key.get_ref().to_string() } else { format!("{path}.{}", key.get_ref()) };
        consider(key.span(), &key_path, offset, best);
        walk_value(value, &key_path, offset, best);
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    consider(value.span(), path, offset, best);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, offset, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), offset, best);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
