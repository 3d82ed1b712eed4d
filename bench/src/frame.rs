//! Test frames: Ethernet II / IPv4 / UDP with a 16-byte probe header at the start of the UDP
//! payload. Pure bytes, no I/O.
//!
//! Sizes are named the way packet-generator users name them: "64 B" is a minimum Ethernet frame
//! on the wire *including* its 4-byte FCS, which the NIC (or nothing, on a veth or TAP) adds. The
//! bytes we build are therefore `size - 4` long, as with kernel pktgen's `pkt_size`.
//!
//! A frame is built once per (flow, size) as a [`Template`]; sending a frame then only patches
//! the sequence number and the timestamp and fixes the UDP checksum incrementally (RFC 1624),
//! so the generator never re-sums a 9000-byte payload.

use std::net::Ipv4Addr;
use std::time::Duration;

use thiserror::Error;

/// Ethernet FCS, counted in the nominal size but not built.
pub const FCS_LEN: usize = 4;
/// Ethernet II header.
pub const ETH_LEN: usize = 14;
/// IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// UDP header.
pub const UDP_LEN: usize = 8;
/// Probe header: magic (2), flow (2), sequence (4), send timestamp in ns (8).
pub const PROBE_LEN: usize = 16;
/// Offset of the probe header in the frame.
pub const PROBE_OFF: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Smallest nominal size that holds the probe: the Ethernet minimum, 64 B.
pub const MIN_SIZE: usize = 64;
/// Largest nominal size (jumbo frames).
pub const MAX_SIZE: usize = 9000;
/// Marks a probe ("tw"), so the sink ignores any other UDP traffic on the port.
pub const MAGIC: u16 = 0x7477;

/// IMIX 7:4:1 (the "simple IMIX"): nominal sizes and their weights.
pub const IMIX: [(usize, usize); 3] = [(64, 7), (576, 4), (1518, 1)];

/// Why a frame cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// frame size {0} B is outside 64..=9000 B
    #[error("frame size {0} B is outside {MIN_SIZE}..={MAX_SIZE} B")]
    Size(usize),
}

/// Addresses and ports of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    /// Source MAC (the sending interface's).
    pub src_mac: [u8; 6],
    /// Destination MAC (the receiver's or the next hop's).
    pub dst_mac: [u8; 6],
    /// Source IPv4 address.
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address.
    pub dst_ip: Ipv4Addr,
    /// UDP source port; flows differ by it.
    pub src_port: u16,
    /// UDP destination port, the sink's.
    pub dst_port: u16,
    /// Flow number carried in the probe.
    pub flow: u16,
}

/// A ready frame of one flow and size, with the partial UDP checksum of everything but the
/// probe's sequence number and timestamp.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    /// One's-complement sum (unfolded) of the pseudo header and the UDP datagram with the
    /// sequence and timestamp fields zero.
    partial: u32,
    /// Nominal size (with FCS).
    size: usize,
}

/// Sums 16-bit big-endian words (odd trailing byte padded with zero) into `acc`.
fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that long payloads never overflow.
        if acc > 0xffff_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a one's-complement sum to 16 bits.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // Lossless: the loop leaves at most 16 bits.
    acc as u16
}

impl Template {
    /// Builds the frame of `flow` with nominal size `size` (64..=9000, FCS included).
    pub fn new(flow: &FlowSpec, size: usize) -> Result<Template, FrameError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(FrameError::Size(size));
        }
        let len = size - FCS_LEN;
        let mut b = vec![0u8; len];
        // Ethernet II
        b[0..6].copy_from_slice(&flow.dst_mac);
        b[6..12].copy_from_slice(&flow.src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: no options, DF, TTL 64, UDP. Lengths fit u16: len <= 8996.
        let ip_len = (len - ETH_LEN) as u16;
        let ip = &mut b[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&flow.src_ip.octets());
        ip[16..20].copy_from_slice(&flow.dst_ip.octets());
        let ip_sum = !fold(sum_words(0, ip));
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // UDP
        let udp_len = ip_len - IPV4_LEN as u16;
        let off = ETH_LEN + IPV4_LEN;
        b[off..off + 2].copy_from_slice(&flow.src_port.to_be_bytes());
        b[off + 2..off + 4].copy_from_slice(&flow.dst_port.to_be_bytes());
        b[off + 4..off + 6].copy_from_slice(&udp_len.to_be_bytes());
        // Probe header with zero sequence and timestamp; the rest of the payload stays zero.
        b[PROBE_OFF..PROBE_OFF + 2].copy_from_slice(&MAGIC.to_be_bytes());
        b[PROBE_OFF + 2..PROBE_OFF + 4].copy_from_slice(&flow.flow.to_be_bytes());
        // Pseudo header + UDP header + payload, checksum field zero.
        let mut acc = sum_words(0, &flow.src_ip.octets());
        acc = sum_words(acc, &flow.dst_ip.octets());
        acc = acc.wrapping_add(17).wrapping_add(u32::from(udp_len));
        acc = sum_words(acc, &b[off..]);
        Ok(Template { bytes: b, partial: acc, size })
    }

    /// Length of the bytes built (nominal size minus FCS).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a template holds at least a minimum frame.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Nominal size, FCS included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Writes the frame with `seq` and `ts_ns` into `out` (at least [`Template::len`] bytes;
    /// returns the bytes written, 0 if `out` is too short).
    pub fn write(&self, out: &mut [u8], seq: u32, ts_ns: u64) -> usize {
        let Some(dst) = out.get_mut(..self.bytes.len()) else {
            return 0;
        };
        dst.copy_from_slice(&self.bytes);
        self.stamp(dst, seq, ts_ns);
        self.bytes.len()
    }

    /// Patches sequence, timestamp and UDP checksum into a frame that holds this template.
    fn stamp(&self, dst: &mut [u8], seq: u32, ts_ns: u64) {
        let seq_b = seq.to_be_bytes();
        let ts_b = ts_ns.to_be_bytes();
        dst[PROBE_OFF + 4..PROBE_OFF + 8].copy_from_slice(&seq_b);
        dst[PROBE_OFF + 8..PROBE_OFF + 16].copy_from_slice(&ts_b);
        let acc = sum_words(sum_words(self.partial, &seq_b), &ts_b);
        let mut sum = !fold(acc);
        if sum == 0 {
            sum = 0xffff; // 0 means "no checksum" in UDP over IPv4
        }
        let c = ETH_LEN + IPV4_LEN + 6;
        dst[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// The frame with `seq` and `ts_ns`, as a new vector (tests, small tools).
    pub fn to_vec(&self, seq: u32, ts_ns: u64) -> Vec<u8> {
        let mut v = self.bytes.clone();
        self.stamp(&mut v, seq, ts_ns);
        v
    }
}

/// What the sink reads out of a probe frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Flow number.
    pub flow: u16,
    /// Per-flow sequence number.
    pub seq: u32,
    /// Send time, CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

/// The UDP payload of an untagged IPv4/UDP frame to `dst_port` (first fragments only).
fn udp_payload(frame: &[u8], dst_port: u16) -> Option<&[u8]> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_LEN..)?;
    let vihl = *ip.first()?;
    if vihl >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    // Fragments other than the first carry no UDP header.
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < IPV4_LEN {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != dst_port {
        return None;
    }
    udp.get(UDP_LEN..)
}

/// Parses a received frame: `Some` only for an untagged IPv4/UDP frame to `dst_port` whose
/// payload starts with a probe header. Never panics, whatever the bytes.
pub fn parse_probe(frame: &[u8], dst_port: u16) -> Option<Probe> {
    let p = udp_payload(frame, dst_port)?.get(..PROBE_LEN)?;
    if u16::from_be_bytes([p[0], p[1]]) != MAGIC {
        return None;
    }
    Some(Probe {
        flow: u16::from_be_bytes([p[2], p[3]]),
        seq: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ts_ns: u64::from_be_bytes([p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]]),
    })
}

/// Magic of the header the kernel's pktgen puts at the start of its UDP payload.
pub const KPKTGEN_MAGIC: u32 = 0xbe9b_e955;

/// What the sink reads out of a kernel-pktgen frame (`struct pktgen_hdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KpktgenProbe {
    /// The sending device's sequence number (per pktgen device, not per flow).
    pub seq: u32,
    /// Send time: CLOCK_REALTIME seconds (low 32 bits) and microseconds.
    pub tv_sec: u32,
    /// Microseconds part of the send time.
    pub tv_usec: u32,
}

impl KpktgenProbe {
    /// One-way latency against `now` (CLOCK_REALTIME since the epoch), in ns; `None` when the
    /// frame carries no timestamp (pktgen's NO_TIMESTAMP) or one from the future.
    pub fn latency_ns(&self, now: Duration) -> Option<u64> {
        if self.tv_sec == 0 && self.tv_usec == 0 {
            return None;
        }
        let secs = (now.as_secs() as u32).wrapping_sub(self.tv_sec);
        let ns = i128::from(secs) * 1_000_000_000 + i128::from(now.subsec_nanos())
            - i128::from(self.tv_usec) * 1000;
        u64::try_from(ns).ok().filter(|&n| n < 3_600_000_000_000)
    }
}

/// Parses a kernel-pktgen frame to `dst_port`. Never panics, whatever the bytes.
pub fn parse_kpktgen(frame: &[u8], dst_port: u16) -> Option<KpktgenProbe> {
    let p = udp_payload(frame, dst_port)?.get(..16)?;
    let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    (word(0) == KPKTGEN_MAGIC).then(|| KpktgenProbe { seq: word(4), tv_sec: word(8), tv_usec: word(12) })
}

/// The sizes a sender cycles through: one size, or IMIX 7:4:1 interleaved (a 12-frame pattern
/// that spreads the large frames instead of sending them in a burst).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeMix {
    /// Every frame has this nominal size.
    Fixed(usize),
    /// IMIX 7:4:1 of 64, 576 and 1518 B.
    Imix,
}

impl SizeMix {
    /// The repeating pattern of nominal sizes.
    pub fn pattern(&self) -> Vec<usize> {
        match self {
            SizeMix::Fixed(s) => vec![*s],
            SizeMix::Imix => vec![64, 576, 64, 1518, 64, 576, 64, 64, 576, 64, 576, 64],
        }
    }

    /// Average nominal size of the pattern.
    pub fn mean_size(&self) -> f64 {
        let p = self.pattern();
        p.iter().sum::<usize>() as f64 / p.len() as f64
    }

    /// Largest nominal size of the pattern.
    pub fn max_size(&self) -> usize {
        self.pattern().into_iter().max().unwrap_or(MIN_SIZE)
    }

    /// A short label: `64` or `imix`.
    pub fn label(&self) -> String {
        match self {
            SizeMix::Fixed(s) => s.to_string(),
            SizeMix::Imix => "imix".into(),
        }
    }
}

impl std::str::FromStr for SizeMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeMix::Imix);
        }
        let n: usize = s.parse().map_err(|_| format!("`{s}` is not a frame size (64..=9000) or `imix`"))?;
        if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
            return Err(format!("frame size {n} is outside {MIN_SIZE}..={MAX_SIZE}"));
        }
        Ok(SizeMix::Fixed(n))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn spec() -> FlowSpec {
        FlowSpec {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 10007,
            dst_port: 9009,
            flow: 7,
        }
    }

    /// Recomputes the UDP checksum with etherparse and compares.
    fn check(frame: &[u8], size: usize) {
        assert_eq!(frame.len(), size - FCS_LEN);
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
        assert_eq!(usize::from(h.total_len), size - FCS_LEN - ETH_LEN);
        assert!(h.dont_fragment);
        let Some(TransportSlice::Udp(udp)) = &p.transport else { panic!("not UDP") };
        let uh = udp.to_header();
        let want = uh.calc_checksum_ipv4(&h, udp.payload()).unwrap();
        assert_eq!(uh.checksum, want, "UDP checksum for size {size}");
        assert_eq!(uh.source_port, 10007);
        assert_eq!(uh.destination_port, 9009);
    }

    #[test]
    fn checksums_valid_for_every_size_and_stamp() {
        for size in [64, 65, 128, 511, 512, 1024, 1280, 1518, 4000, 8999, 9000] {
            let t = Template::new(&spec(), size).unwrap();
            for (seq, ts) in [(0, 0), (1, 12345), (u32::MAX, u64::MAX), (0xdead_beef, 0x0123_4567_89ab_cdef)]
            {
                check(&t.to_vec(seq, ts), size);
            }
        }
    }

    #[test]
    fn write_matches_to_vec_and_refuses_short_buffers() {
        let t = Template::new(&spec(), 128).unwrap();
        let mut buf = [0xaau8; 200];
        assert_eq!(t.write(&mut buf, 5, 6), 124);
        assert_eq!(&buf[..124], &t.to_vec(5, 6)[..]);
        assert_eq!(buf[124], 0xaa, "nothing written past the frame");
        assert_eq!(t.write(&mut [0u8; 100], 5, 6), 0);
    }

    #[test]
    fn probe_round_trips() {
        let t = Template::new(&spec(), 64).unwrap();
        let f = t.to_vec(42, 987_654_321);
        assert_eq!(parse_probe(&f, 9009), Some(Probe { flow: 7, seq: 42, ts_ns: 987_654_321 }));
        assert_eq!(parse_probe(&f, 9010), None, "other port");
    }

    #[test]
    fn parse_rejects_non_probes_and_truncations() {
        let f = Template::new(&spec(), 64).unwrap().to_vec(1, 2);
        for n in 0..f.len() {
            if n < PROBE_OFF + PROBE_LEN {
                assert_eq!(parse_probe(&f[..n], 9009), None, "truncated to {n}");
            }
        }
        let mut bad = f.clone();
        bad[PROBE_OFF] ^= 1;
        assert_eq!(parse_probe(&bad, 9009), None, "bad magic");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_probe(&arp, 9009), None, "not IPv4");
        let mut tcp = f;
        tcp[ETH_LEN + 9] = 6;
        assert_eq!(parse_probe(&tcp, 9009), None, "not UDP");
    }

    /// Arbitrary and mutated frames never make the parser panic, and whatever it accepts is a
    /// UDP frame to the port with the magic in place (a small stand-in for a fuzz target).
    #[test]
    fn parser_survives_random_and_mutated_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = Template::new(&spec(), 128).unwrap().to_vec(3, 4);
        for i in 0..20_000 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let len = (rnd() % 200) as usize;
                (0..len).map(|_| rnd() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..(rnd() % 4 + 1) {
                    let at = (rnd() as usize) % v.len();
                    v[at] = rnd() as u8;
                }
                v.truncate((rnd() as usize) % (v.len() + 1));
                v
            };
            if let Some(p) = parse_probe(&buf, 9009) {
                assert_eq!(&buf[12..14], &[0x08, 0x00]);
                let ihl = usize::from(buf[ETH_LEN] & 0x0f) * 4;
                assert!(ihl >= IPV4_LEN);
                let udp = ETH_LEN + ihl;
                assert_eq!(u16::from_be_bytes([buf[udp + 2], buf[udp + 3]]), 9009);
                assert_eq!(u16::from_be_bytes([buf[udp + 8], buf[udp + 9]]), MAGIC);
                let _ = p;
            }
        }
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert_eq!(Template::new(&spec(), 63).unwrap_err(), FrameError::Size(63));
        assert_eq!(Template::new(&spec(), 9001).unwrap_err(), FrameError::Size(9001));
        assert!("63".parse::<SizeMix>().is_err());
        assert!("x".parse::<SizeMix>().is_err());
        assert_eq!("IMIX".parse::<SizeMix>().unwrap(), SizeMix::Imix);
    }

    #[test]
    fn imix_is_7_4_1() {
        let p = SizeMix::Imix.pattern();
        assert_eq!(p.len(), 12);
        for (size, weight) in IMIX {
            assert_eq!(p.iter().filter(|&&s| s == size).count(), weight, "size {size}");
        }
        assert_eq!(SizeMix::Imix.max_size(), 1518);
    }

    #[test]
    fn kernel_pktgen_frames_are_recognised() {
        let t = Template::new(&spec(), 64).unwrap();
        let mut f = t.to_vec(1, 2);
        let udp = ETH_LEN + IPV4_LEN;
        let pay = udp + UDP_LEN;
        f[pay..pay + 4].copy_from_slice(&KPKTGEN_MAGIC.to_be_bytes());
        f[pay + 4..pay + 8].copy_from_slice(&7u32.to_be_bytes());
        f[pay + 8..pay + 12].copy_from_slice(&1000u32.to_be_bytes());
        f[pay + 12..pay + 16].copy_from_slice(&250u32.to_be_bytes());
        let port = u16::from_be_bytes([f[udp + 2], f[udp + 3]]);
        let k = parse_kpktgen(&f, port).unwrap();
        assert_eq!((k.seq, k.tv_sec, k.tv_usec), (7, 1000, 250));
        assert_eq!(parse_probe(&f, port), None, "not one of ours");
        assert_eq!(k.latency_ns(Duration::new(1000, 300_000)), Some(50_000));
        assert_eq!(k.latency_ns(Duration::new(999, 0)), None, "from the future");
        let none = KpktgenProbe { seq: 1, tv_sec: 0, tv_usec: 0 };
        assert_eq!(none.latency_ns(Duration::new(5, 0)), None);
        assert_eq!(parse_kpktgen(&t.to_vec(1, 2), port), None);
        assert_eq!(parse_kpktgen(&f[..40], port), None);
    }
}
