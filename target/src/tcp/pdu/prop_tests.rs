//! Property tests: every PDU type survives encode -> [`check`] -> header
//! digest -> decode with any field values, digests and alignment; and
//! [`check`] plus decode never panic on arbitrary bytes.

use proptest::prelude::*;

use super::*;
use crate::tcp::digest::check_header_digest;

fn digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

fn alignment() -> impl Strategy<Value = u32> {
    (0..=MAX_PDA).prop_map(pda_alignment)
}

fn limits(alignment: u32) -> Limits {
    Limits { max_icd_bytes: 8192, max_data_pdu_bytes: 1 << 20, data_alignment: alignment }
}

/// Encodes with `encode`, checks the common header as `receiver` would,
/// verifies the header digest if any, decodes, and returns the layout and the
/// decoded PDU. Asserts that the encoder wrote exactly up to the data.
fn receive(receiver: Role, digests: Digests, alignment: u32, encode: impl FnOnce(&mut [u8]) -> usize) -> (Layout, Pdu) {
    let mut out = [0xEE; HEADER_BUF_LEN];
    let written = encode(&mut out);
    let common = CommonHeader::decode(out[..8].try_into().unwrap()).unwrap();
    let layout = check(&common, receiver, digests, &limits(alignment)).unwrap();
    if layout.pdu_type.is_term_req() {
        assert_eq!(written, layout.plen as usize);
    } else {
        assert_eq!(written, usize::from(layout.pdo));
    }
    let hlen = usize::from(layout.hlen);
    if layout.header_digest_len > 0 {
        let hdgst = out[hlen..hlen + 4].try_into().unwrap();
        check_header_digest(&out[..hlen], hdgst).unwrap();
    }
    if !layout.pdu_type.is_term_req() {
        assert!(out[layout.header_len()..written].iter().all(|pad| *pad == 0));
    }
    (layout, Pdu::decode(&out[..written]).unwrap())
}

fn ic_req() -> impl Strategy<Value = IcReq> {
    (0..=MAX_PDA, digests(), any::<u32>()).prop_map(|(hpda, digests, maxr2t)| IcReq { pfv: 0, hpda, digests, maxr2t })
}

fn ic_resp() -> impl Strategy<Value = IcResp> {
    (0..=MAX_PDA, digests(), 1024..=u32::MAX / 4).prop_map(|(cpda, digests, dwords)| IcResp {
        pfv: 0,
        cpda,
        digests,
        maxh2cdata: dwords * 4,
    })
}

fn fes() -> impl Strategy<Value = Fes> {
    proptest::sample::select(Fes::ALL.to_vec())
}

fn term_req() -> impl Strategy<Value = TermReq> {
    let direction = prop_oneof![Just(Direction::H2c), Just(Direction::C2h)];
    let quote = proptest::collection::vec(any::<u8>(), 0..200);
    (direction, fes(), any::<u32>(), quote).prop_map(|(direction, fes, fei, quote)| TermReq {
        direction,
        fes,
        fei,
        data: TermData::new(&quote),
    })
}

fn h2c_data() -> impl Strategy<Value = H2cData> {
    (any::<u16>(), any::<u16>(), any::<u32>(), 1..=1u32 << 20, any::<bool>())
        .prop_map(|(cccid, ttag, datao, datal, last)| H2cData { cccid, ttag, datao, datal, last })
}

fn c2h_data() -> impl Strategy<Value = C2hData> {
    (any::<u16>(), any::<u32>(), 1..=1u32 << 20, any::<bool>(), any::<bool>()).prop_map(
        |(cccid, datao, datal, last, success)| C2hData { cccid, datao, datal, last, success: success && last },
    )
}

fn r2t() -> impl Strategy<Value = R2t> {
    (any::<u16>(), any::<u16>(), any::<u32>(), 1..=u32::MAX).prop_map(|(cccid, ttag, r2to, r2tl)| R2t {
        cccid,
        ttag,
        r2to,
        r2tl,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ic_req_round_trips(pdu in ic_req(), negotiated in digests()) {
        let (layout, decoded) = receive(Role::Controller, negotiated, 4, |out| pdu.encode(out));
        prop_assert_eq!(layout.plen, 128);
        prop_assert_eq!(decoded, Pdu::IcReq(pdu));
    }

    #[test]
    fn ic_resp_round_trips(pdu in ic_resp(), negotiated in digests()) {
        let (layout, decoded) = receive(Role::Host, negotiated, 4, |out| pdu.encode(out));
        prop_assert_eq!(layout.plen, 128);
        prop_assert_eq!(decoded, Pdu::IcResp(pdu));
    }

    #[test]
    fn term_req_round_trips(pdu in term_req(), negotiated in digests()) {
        let receiver = match pdu.direction {
            Direction::H2c => Role::Controller,
            Direction::C2h => Role::Host,
        };
        let (layout, decoded) = receive(receiver, negotiated, 4, |out| pdu.encode(out));
        prop_assert_eq!(layout.data_len as usize, pdu.data.len());
        prop_assert_eq!(decoded, Pdu::TermReq(pdu));
    }

    #[test]
    fn capsule_cmd_round_trips(
        sqe in any::<[u8; 64]>(),
        icd_len in prop_oneof![Just(0u32), 1..=8192u32],
        negotiated in digests(),
        alignment in alignment(),
    ) {
        let pdu = CapsuleCmd { sqe };
        let encode = |out: &mut [u8]| pdu.encode(out, negotiated, icd_len, alignment);
        let (layout, decoded) = receive(Role::Controller, negotiated, alignment, encode);
        prop_assert_eq!(layout.data_len, icd_len);
        let digest = if icd_len > 0 { negotiated.data_len() } else { 0 };
        prop_assert_eq!(layout.data_digest_len, digest);
        if icd_len > 0 {
            prop_assert_eq!(u32::from(layout.pdo) % alignment, 0);
        }
        prop_assert_eq!(decoded, Pdu::CapsuleCmd(pdu));
    }

    #[test]
    fn capsule_resp_round_trips(cqe in any::<[u8; 16]>(), negotiated in digests()) {
        let pdu = CapsuleResp { cqe };
        let encode = |out: &mut [u8]| pdu.encode(out, negotiated);
        let (layout, decoded) = receive(Role::Host, negotiated, 4, encode);
        prop_assert_eq!(layout.plen as usize, layout.header_len());
        prop_assert_eq!(decoded, Pdu::CapsuleResp(pdu));
    }

    #[test]
    fn h2c_data_round_trips(pdu in h2c_data(), negotiated in digests(), alignment in alignment()) {
        let encode = |out: &mut [u8]| pdu.encode(out, negotiated, alignment);
        let (layout, decoded) = receive(Role::Controller, negotiated, alignment, encode);
        prop_assert_eq!(layout.data_len, pdu.datal);
        prop_assert_eq!(layout.pdo, pdo_for(DATA_HLEN, negotiated.header, alignment));
        prop_assert_eq!(decoded, Pdu::H2cData(pdu));
    }

    #[test]
    fn c2h_data_round_trips(pdu in c2h_data(), negotiated in digests(), alignment in alignment()) {
        let encode = |out: &mut [u8]| pdu.encode(out, negotiated, alignment);
        let (layout, decoded) = receive(Role::Host, negotiated, alignment, encode);
        prop_assert_eq!(layout.data_len, pdu.datal);
        prop_assert_eq!(layout.data_digest_len, negotiated.data_len());
        prop_assert_eq!(decoded, Pdu::C2hData(pdu));
    }

    #[test]
    fn r2t_round_trips(pdu in r2t(), negotiated in digests()) {
        let encode = |out: &mut [u8]| pdu.encode(out, negotiated);
        let (layout, decoded) = receive(Role::Host, negotiated, 4, encode);
        prop_assert_eq!(layout.header_digest_len, negotiated.header_len());
        prop_assert_eq!(decoded, Pdu::R2t(pdu));
    }

    #[test]
    fn common_header_round_trips(bytes in any::<[u8; 8]>()) {
        if let Ok(common) = CommonHeader::decode(&bytes) {
            prop_assert_eq!(common.encode(), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// What a fuzzer would do: raw bytes through the whole receive path.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        controller in any::<bool>(),
        negotiated in digests(),
        alignment in alignment(),
        max_icd_bytes in any::<u32>(),
        max_data_pdu_bytes in any::<u32>(),
    ) {
        let role = if controller { Role::Controller } else { Role::Host };
        let limits = Limits { max_icd_bytes, max_data_pdu_bytes, data_alignment: alignment };
        let _ = Pdu::decode(&bytes);
        let _ = TermReq::decode(&bytes);
        if let Some(first) = bytes.first_chunk::<8>()
            && let Ok(common) = CommonHeader::decode(first)
            && let Ok(layout) = check(&common, role, negotiated, &limits)
        {
            let most = match layout.pdu_type {
                PduType::CapsuleCmd => max_icd_bytes,
                PduType::H2cData | PduType::C2hData => max_data_pdu_bytes,
                PduType::H2cTermReq | PduType::C2hTermReq => TERM_REQ_MAX_DATA as u32,
                _ => 0,
            };
            prop_assert!(layout.data_len <= most);
            let _ = Pdu::decode(&bytes[..bytes.len().min(layout.plen as usize)]);
        }
    }

    /// Valid PDUs with a few bytes changed: nearer the edges than random bytes.
    #[test]
    fn corrupted_pdus_never_panic(
        pdu in h2c_data(),
        negotiated in digests(),
        flips in proptest::collection::vec((0..28usize, any::<u8>()), 1..4),
        controller in any::<bool>(),
    ) {
        let mut out = [0; HEADER_BUF_LEN];
        let written = pdu.encode(&mut out, negotiated, 4);
        for (at, value) in flips {
            out[at] = value;
        }
        let role = if controller { Role::Controller } else { Role::Host };
        if let Ok(common) = CommonHeader::decode(out[..8].try_into().unwrap())
            && check(&common, role, negotiated, &limits(4)).is_ok()
        {
            let _ = Pdu::decode(&out[..written.max(usize::from(common.hlen))]);
        }
    }
}
