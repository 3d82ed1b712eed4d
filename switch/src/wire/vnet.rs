//! `struct virtio_net_hdr_v1` (12 bytes), as a TAP with `IFF_VNET_HDR` and `TUNSETVNETHDRSZ 12`
//! reads and writes it before every frame. It carries the GSO (segmentation offload) and
//! checksum-offload metadata that lets a 64 KiB TCP super-frame cross the switch as one frame.
//!
//! Fields are little-endian: the daemon sets `TUNSETVNETLE` so this holds on any host.

/// Length of the header the switch uses on every TAP.
pub const VNET_HDR_LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;

/// GSO types (`VIRTIO_NET_HDR_GSO_*`).
pub const GSO_NONE: u8 = 0;
/// TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// UDP fragmentation offload (legacy).
pub const GSO_UDP: u8 = 3;
/// TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation offload (USO, both families).
pub const GSO_UDP_L4: u8 = 5;
/// ECN bit that may be or-ed into the GSO type.
pub const GSO_ECN: u8 = 0x80;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// A decoded vnet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_*` flags.
    pub flags: u8,
    /// `GSO_*` type, ECN bit included.
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

/// Why a vnet header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// The buffer is shorter than the header.
    #[error("shorter than the vnet header")]
    Truncated,
    /// The GSO type is not one the switch knows.
    #[error("unknown GSO type {0:#x}")]
    UnknownGso(u8),
    /// The checksum location is outside the frame.
    #[error("checksum offset outside the frame")]
    CsumOutOfRange,
}

fn le16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_le_bytes(a)
}

impl VnetHdr {
    /// Decodes the header at the start of `buf` (`buf` = header + frame) and checks it against
    /// the frame length that follows it.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, VnetError> {
        if buf.len() < VNET_HDR_LEN {
            return Err(VnetError::Truncated);
        }
        let hdr = VnetHdr {
            flags: buf[field::FLAGS],
            gso_type: buf[field::GSO_TYPE],
            hdr_len: le16(buf, field::HDR_LEN),
            gso_size: le16(buf, field::GSO_SIZE),
            csum_start: le16(buf, field::CSUM_START),
            csum_offset: le16(buf, field::CSUM_OFFSET),
        };
        match hdr.gso_type & !GSO_ECN {
            GSO_NONE | GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4 => {}
            other => return Err(VnetError::UnknownGso(other)),
        }
        let frame_len = buf.len() - VNET_HDR_LEN;
        if hdr.flags & F_NEEDS_CSUM != 0
            && usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2 > frame_len
        {
            return Err(VnetError::CsumOutOfRange);
        }
        Ok(hdr)
    }

    /// Whether this frame is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf` (`num_buffers` = 0).
    /// Returns false when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(out) = buf.get_mut(..VNET_HDR_LEN) else { return false };
        out[field::FLAGS] = self.flags;
        out[field::GSO_TYPE] = self.gso_type;
        out[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        out[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        out[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[10..12].fill(0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A TCPv4 super-frame header as the kernel writes it: NEEDS_CSUM, gso 1448, csum at 34+16.
    static TSO4: [u8; 12] = [0x01, 0x01, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];

    #[test]
    fn deconstruct() {
        let mut buf = TSO4.to_vec();
        buf.resize(12 + 200, 0);
        let h = VnetHdr::parse(&buf).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: 1,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert!(h.is_gso());
    }

    #[test]
    fn construct_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut buf = [0xffu8; 12];
        assert!(h.emit(&mut buf));
        assert_eq!(buf, TSO4);
        assert!(!h.emit(&mut [0u8; 11]));
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(VnetHdr::parse(&TSO4[..11]), Err(VnetError::Truncated));
        // checksum offset past the end of a 40-byte frame
        let mut buf = TSO4.to_vec();
        buf.resize(12 + 40, 0);
        assert_eq!(VnetHdr::parse(&buf), Err(VnetError::CsumOutOfRange));
        let mut bad = TSO4.to_vec();
        bad[1] = 9;
        bad.resize(200, 0);
        assert_eq!(VnetHdr::parse(&bad), Err(VnetError::UnknownGso(9)));
        let plain = [0u8; 12];
        assert!(!VnetHdr::parse(&plain).unwrap().is_gso());
    }
}
