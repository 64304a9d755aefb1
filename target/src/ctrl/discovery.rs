//! The discovery log page (NVMe over Fabrics: Discovery Log Page, log identifier 70h): what a
//! host connected to the discovery subsystem may reach.
//!
//! Invariants: a host sees only NVM subsystems whose allow list admits it, each once per
//! listener that serves NVM subsystems (discovery-only listeners are not listed), with the
//! listener's advertised address; the entry for the current discovery subsystem comes first;
//! the generation counter is the target's, which moves whenever this list may have changed
//! (subsystems, hosts and listeners change at run time; the page is built from one snapshot of
//! the listeners, and the counter is read before the lists, so a change made while it is
//! built moves the counter past the one reported).

use std::net::SocketAddr;

use crate::config::Transport;
use crate::nvme::discovery::{self as disc, DiscoveryLogEntry, DiscoveryLogHeader};
use crate::nvme::{CntlId, Nqn};
use crate::subsys::{ListenerInfo, Target};

use super::Controller;

fn entry(listener: &ListenerInfo, subtype: u8, subnqn: &Nqn, asqsz: u16) -> DiscoveryLogEntry {
    let addr: SocketAddr = listener.advertised;
    let (trtype, tsas) = match listener.transport {
        Transport::Tcp => (disc::TRTYPE_TCP, disc::Tsas::Tcp { sectype: disc::TCP_SECTYPE_NONE }),
        // Reliable connected queue pairs set up through the RDMA CM, on any provider.
        Transport::Rdma => (
            disc::TRTYPE_RDMA,
            disc::Tsas::Rdma {
                qptype: disc::RDMA_QPTYPE_CONNECTED,
                prtype: disc::RDMA_PRTYPE_NOT_SPECIFIED,
                cms: disc::RDMA_CMS_RDMA_CM,
                pkey: 0,
            },
        ),
    };
    DiscoveryLogEntry {
        trtype,
        adrfam: if addr.is_ipv4() { disc::ADRFAM_IPV4 } else { disc::ADRFAM_IPV6 },
        subtype,
        // No secure channel is required; SQ flow control may be disabled at Connect.
        treq: disc::TREQ_SECURE_CHANNEL_NOT_REQUIRED | disc::TREQ_DISABLE_SQ_FLOW_CONTROL,
        portid: listener.port_id,
        cntlid: CntlId::DYNAMIC.get(),
        asqsz,
        eflags: 0,
        trsvcid: addr.port().to_string(),
        subnqn: subnqn.clone(),
        traddr: addr.ip().to_string(),
        tsas,
    }
}

/// The whole page for `ctrl`'s host: header, then the entries.
pub fn log_page(target: &Target, ctrl: &Controller) -> Vec<u8> {
    let asqsz = target.limits.max_queue_entries;
    let genctr = target.discovery_genctr();
    let mut entries = Vec::new();
    // One snapshot: listeners may come and go while the page is built.
    let listeners = target.listeners();
    if let Some(here) = listeners.iter().find(|l| l.port_id == ctrl.port_id) {
        entries.push(entry(here, disc::SUBTYPE_CURRENT_DISCOVERY, &target.discovery.nqn, asqsz));
    }
    for subsys in target.subsystems() {
        if !subsys.allows(ctrl.hostnqn.as_str()) {
            continue;
        }
        for listener in listeners.iter().filter(|l| !l.discovery_only) {
            entries.push(entry(listener, disc::SUBTYPE_NVM, &subsys.nqn, asqsz));
        }
    }
    let header = DiscoveryLogHeader { genctr, numrec: entries.len() as u64, recfmt: 0 };
    let mut page = vec![0u8; DiscoveryLogHeader::SIZE + entries.len() * DiscoveryLogEntry::SIZE];
    header.encode(&mut page[..DiscoveryLogHeader::SIZE]);
    for (e, chunk) in entries.iter().zip(page[DiscoveryLogHeader::SIZE..].chunks_exact_mut(DiscoveryLogEntry::SIZE)) {
        e.encode(chunk);
    }
    page
}
