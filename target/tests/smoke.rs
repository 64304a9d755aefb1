//! The shortest path a host takes: connect, enable, identify, an I/O queue, write, read back.

mod common;

use common::{NQN, Target};
use fabriq_bench::host::{Connection, HostOptions, icd_limit_from_ioccsz};
use fabriq_bench::pattern;

#[test]
fn connect_write_read_back() {
    let target = Target::simple();
    let opts = HostOptions::default();
    let mut admin = Connection::open(target.addr, &opts).unwrap();
    let cntlid = admin.connect_admin(NQN, 0, 31).unwrap();
    admin.enable().unwrap();
    let ctrl = admin.identify_controller().unwrap();
    assert_eq!(ctrl.cntlid, cntlid);
    admin.set_number_of_queues(1).unwrap();
    let mut io = Connection::open(target.addr, &opts).unwrap();
    io.connect_io(NQN, cntlid, 1, 127).unwrap();
    io.set_icd_limit(icd_limit_from_ioccsz(ctrl.ioccsz));
    for (slba, nlb) in [(0u64, 8u32), (100, 256), (5000, 1)] {
        let mut data = vec![0; nlb as usize * 512];
        pattern::fill(&mut data, 512, slba, 7);
        assert!(io.write(1, slba, nlb, &data, false).unwrap().is_success());
        let mut back = vec![0; data.len()];
        assert!(io.read(1, slba, nlb, &mut back).unwrap().is_success());
        pattern::check(&back, 512, slba, 7).unwrap();
    }
}
