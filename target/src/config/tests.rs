//! Tests of the configuration: the issue's example, every error's exact rendering,
//! sizes, and round trips through `Config::to_toml`.

use super::*;
use proptest::prelude::*;

/// The example from the issue, with a host NQN filled in.
const ISSUE_EXAMPLE: &str = r#"
[target]
reactors = 1                      # data-plane threads
[[listener]]
transport = "tcp"
address = "127.0.0.1:4420"
advertise = "10.0.2.2:4420"       # optional: what discovery log entries show
[[subsystem]]
nqn = "nqn.2026-11.dev.fabriq:demo"
allow_any_host = false
hosts = ["nqn.2014-08.org.nvmexpress:uuid:7f3c0e0a-4a7e-4c52-9d3b-2f1b8f7e5a10"]
  [[subsystem.namespace]]
  nsid = 1
  backend = "file"                # file | null | mem
  path = "/var/lib/fabriq/demo.img"
  size = "1GiB"                   # create a sparse file of this size if missing
  block_size = 4096               # 512 or 4096
"#;

fn error(text: &str) -> String {
    match Config::parse(text, "t.toml") {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(error) => error.to_string(),
    }
}

fn parse(text: &str) -> Config {
    Config::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// One listener, then `rest`: the listener takes lines 1-2.
fn with_listener(rest: &str) -> String {
    format!("[[listener]]\naddress = \"127.0.0.1:4420\"\n{rest}")
}

/// One listener and one subsystem `nqn.2026-11.dev.fabriq:a` (lines 1-4), then `rest`.
fn with_subsystem(rest: &str) -> String {
    with_listener(&format!("[[subsystem]]\nnqn = \"nqn.2026-11.dev.fabriq:a\"\n{rest}"))
}

#[test]
fn issue_example_parses() {
    let config = parse(ISSUE_EXAMPLE);
    assert_eq!(
        config,
        Config {
            target: TargetSection::default(),
            listeners: vec![Listener {
                transport: Transport::Tcp,
                address: "127.0.0.1:4420".parse().unwrap(),
                advertise: Some("10.0.2.2:4420".parse().unwrap()),
                discovery_only: false,
            }],
            subsystems: vec![Subsystem {
                nqn: "nqn.2026-11.dev.fabriq:demo".into(),
                allow_any_host: false,
                hosts: vec!["nqn.2014-08.org.nvmexpress:uuid:7f3c0e0a-4a7e-4c52-9d3b-2f1b8f7e5a10".into()],
                serial: None,
                model: None,
                namespaces: vec![Namespace {
                    nsid: 1,
                    backend: Backend::File {
                        path: "/var/lib/fabriq/demo.img".into(),
                        size_bytes: Some(1 << 30),
                        direct: DirectIo::Auto,
                    },
                    block_size: 4096,
                    uuid: None,
                    nguid: None,
                    faults: Vec::new(),
                }],
            }],
            pools: Vec::new(),
            api: ApiSection::default(),
        }
    );
}

#[test]
fn pools_and_api_parse_with_defaults_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let text = with_listener(&format!(
        "[api]\naddress = \"[::1]:9800\"\ntoken_file = \"{}\"\nbody_limit_bytes = \"8KiB\"\n\n\
         [[pool]]\nname = \"p1\"\npath = \"{}\"\nsize = \"64MiB\"\n\n[[pool]]\nname = \"dev\"\npath = \"{}\"\nforce = true\n",
        token.display(),
        dir.path().join("p1.img").display(),
        token.display(),
    ));
    let config = parse(&text);
    assert_eq!(
        config.pools,
        vec![
            PoolSection {
                name: "p1".into(),
                path: dir.path().join("p1.img"),
                size_bytes: Some(64 << 20),
                force: false
            },
            PoolSection { name: "dev".into(), path: token.clone(), size_bytes: None, force: true },
        ]
    );
    assert_eq!(
        config.api,
        ApiSection {
            enabled: true,
            address: "[::1]:9800".parse().unwrap(),
            token_file: Some(token.clone()),
            body_limit_bytes: 8192,
            request_timeout_ms: 30_000,
        }
    );
    assert_eq!(config.token_path(), token);
    assert_eq!(parse(&config.to_toml()), config);
    let defaults = parse(&with_listener(""));
    assert_eq!(defaults.api.address, "127.0.0.1:8800".parse().unwrap());
    assert_eq!(defaults.token_path(), Path::new("./fabriq-data/api-token"));
}

#[test]
fn pool_and_api_errors_name_their_field() {
    let cases = [
        ("[[pool]]\nname = \"-bad\"\npath = \"/x\"\nsize = \"64MiB\"\n", "pool[0].name", "not a valid pool name"),
        ("[[pool]]\npath = \"/x\"\nsize = \"64MiB\"\n", "pool[0].name", "missing"),
        ("[[pool]]\nname = \"a\"\npath = \"/nonexistent/x\"\n", "pool[0].path", "does not exist"),
        ("[[pool]]\nname = \"a\"\npath = \"/x\"\nsize = \"1MiB\"\n", "pool[0].size", "out of range"),
        ("[[pool]]\nname = \"a\"\npath = \"/x\"\nsize = 10485761\n", "pool[0].size", "multiple of 4096"),
        (
            "[[pool]]\nname = \"a\"\npath = \"/x\"\nsize = \"64MiB\"\n[[pool]]\nname = \"a\"\npath = \"/y\"\nsize = \"64MiB\"\n",
            "pool[1].name",
            "already used",
        ),
        (
            "[[pool]]\nname = \"a\"\npath = \"/x\"\nsize = \"64MiB\"\n[[pool]]\nname = \"b\"\npath = \"/x\"\nsize = \"64MiB\"\n",
            "pool[1].path",
            "already used",
        ),
        ("[api]\naddress = \"localhost:8800\"\n", "api.address", "not an IP address"),
        ("[api]\ntoken_file = \"/nonexistent/token\"\n", "api.token_file", "does not exist"),
        ("[api]\nrequest_timeout_ms = 5\n", "api.request_timeout_ms", "out of range"),
        ("[api]\nport = 1\n", "api.port", "unknown field"),
    ];
    for (section, field, words) in cases {
        let err = Config::parse(&with_listener(section), "t.toml").unwrap_err().to_string();
        assert!(err.contains(&format!("field `{field}`")) && err.contains(words), "{section}: {err}");
    }
}

#[test]
fn every_field_parses() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.img");
    std::fs::write(&device, vec![0u8; 8192]).unwrap();
    let text = format!(
        r#"
[target]
reactors = 1
mdts_bytes = "256KiB"
max_queue_entries = 256
max_io_queues = 4
in_capsule_data_bytes = 4096
h2c_window_bytes = "1MiB"
c2h_slice_bytes = "64KiB"
keep_alive_default_ms = 5000
buffer_pool_bytes = "16MiB"
busy_poll_us = 0
data_dir = "/srv/fabriq"

[[listener]]
address = "[::1]:4420"

[[listener]]
transport = "tcp"
address = "0.0.0.0:8009"
advertise = "192.0.2.7:8009"
discovery_only = true

[[subsystem]]
nqn = "nqn.2026-11.dev.fabriq:all"
allow_any_host = true
serial = "FQ0001"
model = "fabriq test"

[[subsystem.namespace]]
nsid = 7
backend = "file"
path = "{}"
direct = "off"
block_size = 512
uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
nguid = "00112233445566778899aabbccddeeff"

[[subsystem.namespace]]
nsid = 0xFFFFFFFE
backend = "null"
size = "128GB"

[[subsystem.namespace]]
nsid = 2
backend = "mem"
size = 1048576
"#,
        device.display()
    );
    let config = parse(&text);
    assert_eq!(
        config.target,
        TargetSection {
            reactors: 1,
            cpus: Vec::new(),
            mdts_bytes: 256 * 1024,
            max_queue_entries: 256,
            max_io_queues: 4,
            in_capsule_data_bytes: 4096,
            h2c_window_bytes: 1 << 20,
            c2h_slice_bytes: 64 << 10,
            keep_alive_default_ms: 5000,
            buffer_pool_bytes: 16 << 20,
            busy_poll_us: 0,
            data_dir: "/srv/fabriq".into(),
        }
    );
    assert_eq!(config.listeners[0].address, "[::1]:4420".parse().unwrap());
    assert_eq!(config.listeners[0].transport, Transport::Tcp);
    assert!(config.listeners[1].discovery_only);
    let subsystem = &config.subsystems[0];
    assert!(subsystem.allow_any_host);
    assert_eq!(subsystem.serial.as_deref(), Some("FQ0001"));
    assert_eq!(subsystem.model.as_deref(), Some("fabriq test"));
    let ns = &subsystem.namespaces;
    assert_eq!(
        ns[0],
        Namespace {
            nsid: 7,
            backend: Backend::File { path: device.clone(), size_bytes: None, direct: DirectIo::Off },
            block_size: 512,
            uuid: Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse().unwrap()),
            nguid: Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff
            ]),
            faults: Vec::new(),
        }
    );
    assert_eq!(ns[1].nsid, 0xFFFF_FFFE);
    assert_eq!(ns[1].backend, Backend::Null { size_bytes: 128_000_000_000 });
    assert_eq!(ns[1].block_size, 4096);
    assert_eq!(ns[2].backend, Backend::Mem { size_bytes: 1 << 20 });
    assert_eq!(parse(&config.to_toml()), config);
}

#[test]
fn embedded_default_is_as_documented_and_round_trips() {
    let config = Config::embedded_default(Path::new("/tmp/fabriq-test-data"));
    assert_eq!(config.target.data_dir, Path::new("/tmp/fabriq-test-data"));
    assert_eq!(config.target.reactors, 1);
    let addresses: Vec<(String, bool)> =
        config.listeners.iter().map(|l| (l.address.to_string(), l.discovery_only)).collect();
    assert_eq!(addresses, [("127.0.0.1:4420".to_string(), false), ("127.0.0.1:8009".to_string(), true)]);
    let subsystem = &config.subsystems[0];
    assert_eq!(subsystem.nqn, "nqn.2026-11.dev.fabriq:default");
    assert!(subsystem.allow_any_host);
    assert_eq!(
        subsystem.namespaces,
        [Namespace {
            nsid: 1,
            backend: Backend::File {
                path: "/tmp/fabriq-test-data/default.img".into(),
                size_bytes: Some(1 << 30),
                direct: DirectIo::Auto,
            },
            block_size: 4096,
            uuid: None,
            nguid: None,
            faults: Vec::new(),
        }]
    );
    let text = config.to_toml();
    assert_eq!(Config::parse(&text, "default.toml").unwrap_or_else(|e| panic!("{e}\n{text}")), config);
}

#[test]
fn omitted_sections_take_their_defaults() {
    let config = parse(&with_listener(""));
    assert_eq!(config.target, TargetSection::default());
    assert_eq!(config.listeners[0].transport, Transport::Tcp);
    assert!(!config.listeners[0].discovery_only);
    assert!(config.subsystems.is_empty());
}

// Each error below is asserted whole: file, line, column, field and message.

#[test]
fn syntax_error_names_the_place() {
    assert_eq!(error("[target]\nreactors = \n"), "t.toml:2:12: string values must be quoted, expected literal string");
    assert_eq!(error("[target]\nreactors = 1\nreactors = 2\n"), "t.toml:3:1: duplicate key");
}

#[test]
fn unknown_field_is_refused() {
    assert_eq!(
        error(&with_subsystem(
            "[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = \"1MiB\"\nblok_size = 512\n"
        )),
        "t.toml:9:1: field `subsystem[0].namespace[0].blok_size`: unknown field `blok_size`, expected one of \
         `nsid`, `backend`, `path`, `size`, `direct`, `block_size`, `uuid`, `nguid`, `fault`"
    );
    assert_eq!(
        error("[target]\nreactorz = 2\n"),
        "t.toml:2:1: field `target.reactorz`: unknown field `reactorz`, expected one of `reactors`, \
         `cpus`, `mdts_bytes`, `max_queue_entries`, `max_io_queues`, `in_capsule_data_bytes`, \
         `h2c_window_bytes`, `c2h_slice_bytes`, `keep_alive_default_ms`, `buffer_pool_bytes`, `busy_poll_us`, \
         `data_dir`"
    );
    assert_eq!(
        error("[[listener]]\naddress = \"127.0.0.1:4420\"\n\n[[subsytem]]\n"),
        "t.toml:4:3: field `subsytem`: unknown field `subsytem`, expected one of `target`, `listener`, `subsystem`, `pool`, `api`"
    );
}

#[test]
fn wrong_type_is_refused() {
    assert_eq!(
        error("[target]\nreactors = \"two\"\n"),
        "t.toml:2:12: field `target.reactors`: invalid type: string \"two\", expected an integer"
    );
    assert_eq!(
        error(&with_subsystem("hosts = [\"nqn.2014-08.org.nvmexpress:uuid:1\", 5]\n")),
        "t.toml:5:47: field `subsystem[0].hosts[1]`: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        error(&with_subsystem("namespace = [{ nsid = 1, backend = \"mem\", size = 1.5 }]\n")),
        "t.toml:5:50: field `subsystem[0].namespace[0].size`: invalid type: floating point `1.5`, \
         expected a size in bytes: an integer, or a string such as \"512MiB\" or \"100GB\""
    );
    assert_eq!(
        error("[[listener]]\naddress = \"127.0.0.1:4420\"\ndiscovery_only = \"yes\"\n"),
        "t.toml:3:18: field `listener[0].discovery_only`: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn duplicate_nsid_is_refused() {
    assert_eq!(
        error(&with_subsystem(
            "[[subsystem.namespace]]\nnsid = 1\nbackend = \"null\"\nsize = 4096\n\
             [[subsystem.namespace]]\nnsid = 1\nbackend = \"null\"\nsize = 4096\n"
        )),
        "t.toml:10:8: field `subsystem[0].namespace[1].nsid`: NSID already used by \
         `subsystem[0].namespace[0].nsid` (line 6)"
    );
}

#[test]
fn nsid_out_of_range_is_refused() {
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 0\nbackend = \"null\"\nsize = 4096\n")),
        "t.toml:6:8: field `subsystem[0].namespace[0].nsid`: 0 is out of range 1..=4294967294"
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 0xFFFFFFFF\nbackend = \"null\"\nsize = 4096\n")),
        "t.toml:6:8: field `subsystem[0].namespace[0].nsid`: 4294967295 is out of range 1..=4294967294"
    );
}

#[test]
fn bad_block_size_is_refused() {
    assert_eq!(
        error(&with_subsystem(
            "[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = \"1MiB\"\nblock_size = 1024\n"
        )),
        "t.toml:9:14: field `subsystem[0].namespace[0].block_size`: 1024 is not a supported block size: \
         expected 512 or 4096"
    );
}

#[test]
fn size_not_a_multiple_of_the_block_size_is_refused() {
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = \"100kB\"\n")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: 100000 is not a multiple of 4096 (the block size)"
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = 0\n")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: must not be zero"
    );
}

#[test]
fn invalid_nqn_is_refused() {
    assert_eq!(
        error(&with_listener("[[subsystem]]\nnqn = \"nqn.26-11.dev.fabriq:a\"\n")),
        "t.toml:4:7: field `subsystem[0].nqn`: \"nqn.26-11.dev.fabriq:a\" is not a valid NQN: no \"yyyy-mm.\" \
         date after \"nqn.\""
    );
    assert_eq!(
        error(&with_listener("[[subsystem]]\nnqn = \"iqn.2026-11.dev.fabriq:a\"\n")),
        "t.toml:4:7: field `subsystem[0].nqn`: \"iqn.2026-11.dev.fabriq:a\" is not a valid NQN: does not start \
         with \"nqn.\""
    );
    assert_eq!(
        error(&with_listener("[[subsystem]]\nnqn = \"nqn.2026-13.dev.fabriq:a\"\n")),
        "t.toml:4:7: field `subsystem[0].nqn`: \"nqn.2026-13.dev.fabriq:a\" is not a valid NQN: the month of \
         the date is not 01..12"
    );
    assert_eq!(
        error(&with_listener("[[subsystem]]\nnqn = \"nqn.2026-11.:a\"\n")),
        "t.toml:4:7: field `subsystem[0].nqn`: \"nqn.2026-11.:a\" is not a valid NQN: no reverse domain name \
         after the date"
    );
    let long = format!("nqn.2026-11.dev.fabriq:{}", "x".repeat(201));
    assert_eq!(long.len(), 224);
    assert_eq!(
        error(&with_listener(&format!("[[subsystem]]\nnqn = \"{long}\"\n"))),
        format!("t.toml:4:7: field `subsystem[0].nqn`: \"{long}\" is not a valid NQN: longer than 223 bytes")
    );
    assert_eq!(
        error(&with_listener("[[subsystem]]\nallow_any_host = true\n")),
        "t.toml:3:1: field `subsystem[0].nqn`: missing: the subsystem's NQN, e.g. \"nqn.2026-11.dev.fabriq:demo\""
    );
}

#[test]
fn discovery_nqn_is_reserved() {
    assert_eq!(
        error(&with_listener("[[subsystem]]\nnqn = \"nqn.2014-08.org.nvmexpress.discovery\"\n")),
        "t.toml:4:7: field `subsystem[0].nqn`: \"nqn.2014-08.org.nvmexpress.discovery\" is the discovery \
         subsystem, which the target serves by itself"
    );
}

#[test]
fn duplicate_subsystem_nqn_is_refused() {
    assert_eq!(
        error(&with_subsystem("[[subsystem]]\nnqn = \"nqn.2026-11.dev.fabriq:a\"\n")),
        "t.toml:6:7: field `subsystem[1].nqn`: NQN already used by `subsystem[0].nqn` (line 4)"
    );
}

#[test]
fn host_nqns_are_checked() {
    assert_eq!(
        error(&with_subsystem("hosts = [\"nqn.2014-08.org.nvmexpress:uuid:1\", \"host-b\"]\n")),
        "t.toml:5:47: field `subsystem[0].hosts[1]`: \"host-b\" is not a valid NQN: does not start with \"nqn.\""
    );
    assert_eq!(
        error(&with_subsystem(
            "hosts = [\n  \"nqn.2014-08.org.nvmexpress:uuid:1\",\n  \"nqn.2014-08.org.nvmexpress:uuid:1\",\n]\n"
        )),
        "t.toml:7:3: field `subsystem[0].hosts[1]`: host NQN already used by `subsystem[0].hosts[0]` (line 6)"
    );
}

#[test]
fn allow_any_host_with_a_host_list_is_refused() {
    assert_eq!(
        error(&with_subsystem("allow_any_host = true\nhosts = [\"nqn.2014-08.org.nvmexpress:uuid:1\"]\n")),
        "t.toml:6:9: field `subsystem[0].hosts`: allow_any_host = true admits every host, so the `hosts` list \
         would be ignored: remove one of the two"
    );
    // An empty list says the same as no list.
    assert!(parse(&with_subsystem("allow_any_host = true\nhosts = []\n")).subsystems[0].allow_any_host);
}

#[test]
fn listeners_are_checked() {
    assert_eq!(
        error("# nothing but a comment\n"),
        "t.toml:1:1: field `listener`: at least one [[listener]] is needed, or no host can reach the target"
    );
    assert_eq!(
        error("[[listener]]\naddress = \"127.0.0.1:4420\"\n[[listener]]\naddress = \"127.0.0.1:4420\"\n"),
        "t.toml:4:11: field `listener[1].address`: address already used by `listener[0].address` (line 2)"
    );
    assert_eq!(
        error(
            "[[listener]]\naddress = \"127.0.0.1:4420\"\n[[listener]]\naddress = \"0.0.0.0:4420\"\nadvertise = \"192.0.2.1:4420\"\n"
        ),
        "t.toml:4:11: field `listener[1].address`: port 4420 is also bound by `listener[0].address` (line 2), \
         and a wildcard address covers every address of its family"
    );
    assert_eq!(
        error("[[listener]]\naddress = \"localhost:4420\"\n"),
        "t.toml:2:11: field `listener[0].address`: \"localhost:4420\" is not an IP address and port, e.g. \
         \"127.0.0.1:4420\" or \"[::1]:4420\" (host names are not resolved)"
    );
    assert_eq!(
        error("[[listener]]\naddress = \"[::]:4420\"\n"),
        "t.toml:2:11: field `listener[0].address`: listening on every address needs `advertise`: discovery \
         log entries must name an address hosts can reach"
    );
    assert_eq!(
        error("[[listener]]\naddress = \"[::]:4420\"\nadvertise = \"[::]:4420\"\n"),
        "t.toml:3:13: field `listener[0].advertise`: must be an address hosts can connect to: not a wildcard \
         address, not port 0"
    );
    #[cfg(not(feature = "rdma"))]
    assert_eq!(
        error("[[listener]]\ntransport = \"rdma\"\naddress = \"127.0.0.1:4420\"\n"),
        "t.toml:2:13: field `listener[0].transport`: transport \"rdma\" is not built into this fabriq-target \
         (build it with `--features rdma`)"
    );
    assert_eq!(
        error("[[listener]]\ntransport = \"udp\"\naddress = \"127.0.0.1:4420\"\n"),
        "t.toml:2:13: field `listener[0].transport`: \"udp\" is not one of \"tcp\", \"rdma\""
    );
    assert_eq!(
        error("[[listener]]\ntransport = \"tcp\"\n"),
        "t.toml:1:1: field `listener[0].address`: missing: the IP address and port to listen on, e.g. \
         \"127.0.0.1:4420\""
    );
    assert_eq!(
        error(
            "[[listener]]\naddress = \"127.0.0.1:8009\"\ndiscovery_only = true\n\
             [[subsystem]]\nnqn = \"nqn.2026-11.dev.fabriq:a\"\n"
        ),
        "t.toml:1:1: field `listener`: every listener is discovery_only, so no host can reach the subsystems"
    );
    // Port 0 (the kernel chooses) may repeat: each bind gets its own port.
    let config = parse("[[listener]]\naddress = \"127.0.0.1:0\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n");
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn file_namespace_needs_a_size_or_an_existing_path() {
    assert_eq!(
        error(&with_subsystem(
            "[[subsystem.namespace]]\nnsid = 1\nbackend = \"file\"\npath = \"/nonexistent/fabriq/ns.img\"\n"
        )),
        "t.toml:8:8: field `subsystem[0].namespace[0].path`: /nonexistent/fabriq/ns.img does not exist, and \
         without `size` the target cannot create it"
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"file\"\nsize = \"1GiB\"\n")),
        "t.toml:5:1: field `subsystem[0].namespace[0].path`: missing: the file or block device that holds the \
         blocks"
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"file\"\npath = \"\"\nsize = 4096\n")),
        "t.toml:8:8: field `subsystem[0].namespace[0].path`: must not be empty"
    );
    let dir = tempfile::tempdir().unwrap();
    let text = with_subsystem(&format!(
        "[[subsystem.namespace]]\nnsid = 1\nbackend = \"file\"\npath = \"{}\"\n",
        dir.path().display()
    ));
    assert_eq!(
        error(&text),
        format!("t.toml:8:8: field `subsystem[0].namespace[0].path`: {} is a directory", dir.path().display())
    );
}

#[test]
fn backend_keys_are_checked() {
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\n")),
        "t.toml:5:1: field `subsystem[0].namespace[0].size`: missing: a null or mem namespace has no device to \
         take its size from"
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = 4096\npath = \"/x\"\n")),
        "t.toml:9:8: field `subsystem[0].namespace[0].path`: applies only to backend = \"file\", not \"mem\""
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"null\"\nsize = 4096\ndirect = \"on\"\n")),
        "t.toml:9:10: field `subsystem[0].namespace[0].direct`: applies only to backend = \"file\", not \"null\""
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\nbackend = \"spdk\"\n")),
        "t.toml:7:11: field `subsystem[0].namespace[0].backend`: \"spdk\" is not one of \"file\", \"null\", \"mem\""
    );
    assert_eq!(
        error(&with_subsystem(
            "[[subsystem.namespace]]\nnsid = 1\nbackend = \"file\"\npath = \"/x.img\"\nsize = 4096\ndirect = \"yes\"\n"
        )),
        "t.toml:10:10: field `subsystem[0].namespace[0].direct`: \"yes\" is not one of \"auto\", \"on\", \"off\""
    );
    assert_eq!(
        error(&with_subsystem("[[subsystem.namespace]]\nnsid = 1\n")),
        "t.toml:5:1: field `subsystem[0].namespace[0].backend`: missing: where the blocks live: \"file\", \
         \"null\" or \"mem\""
    );
}

#[test]
fn namespace_identifiers_are_checked() {
    let ns = |extra: &str| {
        with_subsystem(&format!("[[subsystem.namespace]]\nnsid = 1\nbackend = \"null\"\nsize = 4096\n{extra}"))
    };
    assert_eq!(
        error(&ns("uuid = \"not-a-uuid\"\n")),
        "t.toml:9:8: field `subsystem[0].namespace[0].uuid`: \"not-a-uuid\" is not a UUID"
    );
    assert_eq!(
        error(&ns("uuid = \"00000000-0000-0000-0000-000000000000\"\n")),
        "t.toml:9:8: field `subsystem[0].namespace[0].uuid`: the nil UUID means \"no UUID\" in NVMe: leave the \
         field out instead"
    );
    assert_eq!(
        error(&ns("nguid = \"0011\"\n")),
        "t.toml:9:9: field `subsystem[0].namespace[0].nguid`: \"0011\" is not 32 hexadecimal digits (16 bytes)"
    );
    assert_eq!(
        error(&ns("nguid = \"00000000000000000000000000000000\"\n")),
        "t.toml:9:9: field `subsystem[0].namespace[0].nguid`: an all-zero NGUID means \"no NGUID\" in NVMe: \
         leave the field out instead"
    );
    // UUIDs are unique across subsystems, not only within one.
    let text = format!(
        "{}[[subsystem]]\nnqn = \"nqn.2026-11.dev.fabriq:b\"\n\
         [[subsystem.namespace]]\nnsid = 1\nbackend = \"null\"\nsize = 4096\n\
         uuid = \"6ba7b810-9dad-11d1-80b4-00c04fd430c8\"\n",
        ns("uuid = \"6ba7b810-9dad-11d1-80b4-00c04fd430c8\"\n")
    );
    assert_eq!(
        error(&text),
        "t.toml:16:8: field `subsystem[1].namespace[0].uuid`: UUID already used by \
         `subsystem[0].namespace[0].uuid` (line 9)"
    );
}

#[test]
fn subsystem_strings_are_checked() {
    assert_eq!(
        error(&with_subsystem("serial = \"012345678901234567890\"\n")),
        "t.toml:5:10: field `subsystem[0].serial`: 21 bytes is longer than the 20 bytes NVMe allows"
    );
    assert_eq!(
        error(&with_subsystem("model = \"fabriq™\"\n")),
        "t.toml:5:9: field `subsystem[0].model`: must be printable ASCII (it is an Identify Controller string)"
    );
    assert_eq!(
        error(&with_subsystem("serial = \"\"\n")),
        "t.toml:5:10: field `subsystem[0].serial`: must not be empty"
    );
}

#[test]
fn target_numbers_are_checked() {
    assert_eq!(
        error("[target]\nmdts_bytes = \"96KiB\"\n"),
        "t.toml:2:14: field `target.mdts_bytes`: 98304 is not a power of two"
    );
    assert_eq!(
        error("[target]\nmdts_bytes = \"2MiB\"\n"),
        "t.toml:2:14: field `target.mdts_bytes`: 2097152 is out of range 4096..=1048576"
    );
    assert_eq!(
        error("[target]\nin_capsule_data_bytes = 1000\n"),
        "t.toml:2:25: field `target.in_capsule_data_bytes`: 1000 is not a multiple of 16 (NVMe/TCP counts \
         in-capsule data in 16-byte units)"
    );
    assert_eq!(
        error("[target]\nmdts_bytes = 4096\nin_capsule_data_bytes = 8192\n"),
        "t.toml:3:25: field `target.in_capsule_data_bytes`: 8192 is out of range 0..=4096"
    );
    assert_eq!(
        error("[target]\nc2h_slice_bytes = 1000\n"),
        "t.toml:2:19: field `target.c2h_slice_bytes`: 1000 is less than 4096 (or 0, which never slices)"
    );
    assert_eq!(
        error("[target]\nc2h_slice_bytes = \"2GiB\"\n"),
        "t.toml:2:19: field `target.c2h_slice_bytes`: 2147483648 is out of range 0..=1073741824"
    );
    assert_eq!(
        parse("[target]\nc2h_slice_bytes = 0\n[[listener]]\naddress = \"127.0.0.1:4420\"\n").target.c2h_slice_bytes,
        0
    );
    assert_eq!(
        error("[target]\nmdts_bytes = \"1MiB\"\nh2c_window_bytes = \"512KiB\"\n"),
        "t.toml:3:20: field `target.h2c_window_bytes`: 524288 is out of range 1048576..=1073741824"
    );
    let listener = "[[listener]]\naddress = \"127.0.0.1:4420\"\n";
    assert_eq!(parse(&format!("[target]\nmdts_bytes = \"1MiB\"\n{listener}")).target.h2c_window_bytes, 1 << 20);
    assert_eq!(
        error("[target]\nmax_queue_entries = 4096\n"),
        "t.toml:2:21: field `target.max_queue_entries`: 4096 is out of range 2..=1024"
    );
    assert_eq!(
        error("[target]\nmax_io_queues = -1\n"),
        "t.toml:2:17: field `target.max_io_queues`: -1 is out of range 1..=1024"
    );
    assert_eq!(
        error("[target]\nbuffer_pool_bytes = \"64KiB\"\n"),
        "t.toml:2:21: field `target.buffer_pool_bytes`: 65536 is less than 131072 (mdts_bytes: one maximal \
         transfer must fit)"
    );
    assert_eq!(
        error("[target]\nbuffer_pool_bytes = \"1000MB\"\n"),
        "t.toml:2:21: field `target.buffer_pool_bytes`: 1000000000 is not a multiple of 4096 (buffers are \
         whole pages)"
    );
    assert_eq!(
        error("[target]\nbusy_poll_us = 2000000\n"),
        "t.toml:2:16: field `target.busy_poll_us`: 2000000 is out of range 0..=1000000"
    );
    assert_eq!(
        error("[target]\nkeep_alive_default_ms = 10\n"),
        "t.toml:2:25: field `target.keep_alive_default_ms`: 10 is out of range 1000..=3600000"
    );
    assert_eq!(
        error("[target]\nreactors = 0\n"),
        format!("t.toml:2:12: field `target.reactors`: 0 is out of range 1..={}", cpus() * 4)
    );
    let too_many = cpus() * 4 + 1;
    assert_eq!(
        error(&format!("[target]\nreactors = {too_many}\n")),
        format!("t.toml:2:12: field `target.reactors`: {too_many} reactors for {} CPUs: at most 4 per CPU", cpus())
    );
    assert_eq!(error("[target]\ndata_dir = \"\"\n"), "t.toml:2:12: field `target.data_dir`: must not be empty");
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn bad_sizes_name_the_field() {
    let ns =
        |size: &str| with_subsystem(&format!("[[subsystem.namespace]]\nnsid = 1\nbackend = \"mem\"\nsize = {size}\n"));
    assert_eq!(
        error(&ns("\"4k\"")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: invalid size \"4k\": unit \"k\" is ambiguous: \
         write \"KiB\", \"MiB\", ... (powers of 1024) or \"kB\", \"MB\", ... (powers of 1000)"
    );
    assert_eq!(
        error(&ns("-3")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: invalid size -3: a size is not negative"
    );
    assert_eq!(
        error(&ns("\"1 XB\"")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: invalid size \"1 XB\": unknown unit \"XB\": \
         expected B, kB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"
    );
    assert_eq!(
        error(&ns("\"GiB\"")),
        "t.toml:8:8: field `subsystem[0].namespace[0].size`: invalid size \"GiB\": expected a whole number of \
         bytes, optionally followed by a unit"
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.toml");
    std::fs::write(&path, "[target]\nreactors = \"x\"\n").unwrap();
    let error = Config::load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}:2:12: field `target.reactors`: invalid type: string \"x\", expected an integer", path.display())
    );
    assert_eq!(error.location().map(|l| l.line), Some(2));
    let missing = dir.path().join("missing.toml");
    let error = Config::load(&missing).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!("{}: cannot read the configuration: ", missing.display())),
        "{error}"
    );
    assert_eq!(error.location(), None);
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(
        error(&with_subsystem("model = \"é\" ; serial = \"x\"\n")),
        "t.toml:5:13: unexpected key or value, expected newline, `#`"
    );
}

proptest! {
    #[test]
    fn namespaces_round_trip_through_to_toml(
        nsid in 1u32..=NSID_MAX,
        blocks in 1u64..1 << 30,
        small_blocks in any::<bool>(),
        kind in 0usize..3,
        uuid in proptest::option::of(1u128..),
        nguid in proptest::option::of(1u128..),
    ) {
        let block_size = if small_blocks { 512 } else { 4096 };
        let size_bytes = blocks * u64::from(block_size);
        let backend = match kind {
            0 => Backend::Null { size_bytes },
            1 => Backend::Mem { size_bytes },
            _ => Backend::File { path: "/nonexistent/ns.img".into(), size_bytes: Some(size_bytes), direct: DirectIo::On },
        };
        let mut config = Config::embedded_default(Path::new("/tmp/fabriq-proptest"));
        config.subsystems[0].namespaces = vec![Namespace {
            nsid,
            backend,
            block_size,
            uuid: uuid.map(Uuid::from_u128),
            nguid: nguid.map(u128::to_be_bytes),
            faults: Vec::new(),
        }];
        let text = config.to_toml();
        prop_assert_eq!(Config::parse(&text, "generated.toml").map_err(|e| e.to_string()), Ok(config));
    }
}

#[test]
fn faults_parse_with_defaults_and_round_trip() {
    let text = r#"
[[listener]]
transport = "tcp"
address = "127.0.0.1:4420"
[[subsystem]]
nqn = "nqn.2026-11.dev.fabriq:f"
allow_any_host = true
  [[subsystem.namespace]]
  nsid = 1
  backend = "mem"
  size = "1MiB"
  block_size = 512
    [[subsystem.namespace.fault]]
    lba = 8
    blocks = 4
    writes = false
    [[subsystem.namespace.fault]]
    lba = 100
"#;
    let config = Config::parse(text, "f.toml").unwrap();
    let faults = &config.subsystems[0].namespaces[0].faults;
    assert_eq!(
        faults,
        &vec![
            Fault { lba: 8, blocks: 4, reads: true, writes: false },
            Fault { lba: 100, blocks: 1, reads: true, writes: true },
        ]
    );
    assert_eq!(Config::parse(&config.to_toml(), "again.toml").unwrap(), config);
    let bad = text.replace("lba = 100", "blocks = 0");
    let err = Config::parse(&bad, "f.toml").unwrap_err().to_string();
    assert!(err.contains("subsystem[0].namespace[0].fault[1].lba"), "{err}");
}

/// With the `rdma` feature an RDMA listener is accepted, and may share its address and port
/// with a TCP listener (separate port spaces); two RDMA listeners may not.
#[cfg(feature = "rdma")]
#[test]
fn rdma_listeners_with_the_feature() {
    let c = parse(
        "[[listener]]\ntransport = \"rdma\"\naddress = \"10.0.2.15:4420\"\n\
         [[listener]]\ntransport = \"tcp\"\naddress = \"10.0.2.15:4420\"\n",
    );
    assert_eq!(c.listeners[0].transport, Transport::Rdma);
    assert_eq!(c.listeners[1].transport, Transport::Tcp);
    assert!(
        error(
            "[[listener]]\ntransport = \"rdma\"\naddress = \"10.0.2.15:4420\"\n\
             [[listener]]\ntransport = \"rdma\"\naddress = \"10.0.2.15:4420\"\n"
        )
        .contains("listener[1].address")
    );
}

#[test]
fn cpus_pin_reactors_and_set_their_number() {
    let allowed = affinity::allowed();
    let first = allowed[0];
    let last = *allowed.last().unwrap();
    let with_target = |body: &str| parse(&format!("[target]\n{body}\n{}", with_listener("")));
    // A list, in the order given; reactors follow its length (a machine with one CPU has
    // no list of two).
    if last != first {
        let config = with_target(&format!("cpus = [{last}, {first}]"));
        assert_eq!((config.target.reactors, config.target.cpus), (2, vec![last, first]));
    }
    // A CPU list string; with reactors given, they agree.
    let config = with_target(&format!("reactors = 1\ncpus = \"{last}\""));
    assert_eq!((config.target.reactors, config.target.cpus.clone()), (1, vec![last]));
    // Round trip, and nothing written when unset.
    assert_eq!(parse(&config.to_toml()), config);
    assert!(!with_target("reactors = 1").to_toml().contains("cpus"));
}

#[test]
fn bad_cpus_name_the_field() {
    let first = affinity::allowed()[0];
    let e = |body: &str| error(&format!("[target]\n{body}\n{}", with_listener("")));
    assert_eq!(
        e(&format!("reactors = 2\ncpus = [{first}]")),
        "t.toml:2:12: field `target.reactors`: 2 reactors but target.cpus names 1 CPU: \
         give one CPU per reactor, or leave reactors out"
    );
    assert_eq!(
        e(&format!("cpus = [{first}, {first}]")),
        format!("t.toml:2:8: field `target.cpus`: CPU {first} is listed twice: each reactor needs a CPU of its own")
    );
    assert_eq!(
        e("cpus = [4095]"),
        format!(
            "t.toml:2:8: field `target.cpus`: CPU 4095 is not one this process may run on (it may run on {})",
            affinity::list_text(&affinity::allowed())
        )
    );
    assert_eq!(
        e("cpus = \"2-x\""),
        "t.toml:2:8: field `target.cpus`: \"2-x\" is not a CPU number or range (a CPU list looks like \"0,4-5\")"
    );
    assert_eq!(
        e("cpus = [-1]"),
        "t.toml:2:8: field `target.cpus`: \"-1\" is not a CPU number or range (a CPU list looks like \"0,4-5\")"
    );
    assert_eq!(e("cpus = []"), "t.toml:2:8: field `target.cpus`: must not be empty");
    let wrong_type = e("cpus = 1.5");
    assert!(wrong_type.contains("target.cpus") && wrong_type.contains("a list of CPU numbers"), "{wrong_type}");
}
