//! UDP headers: field offsets and a checked view ([`UdpPacket`]).

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

/// UDP header fields.
pub mod field {
    use std::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length (header and payload).
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum (0 over IPv4: none).
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view over a UDP header: after [`UdpPacket::new_checked`] no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view over at least a whole header.
    pub fn new_checked(buffer: T) -> Option<UdpPacket<T>> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(UdpPacket { buffer })
    }

    fn be16(&self, r: std::ops::Range<usize>) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[r.start], b[r.start + 1]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT)
    }

    /// The length field.
    pub fn len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    /// Whether the length field says 0 (never valid; for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deconstruct_and_truncated() {
        let b = [0x03, 0xe8, 0x07, 0xd0, 0, 13, 0x12, 0x34, b'h'];
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len(), u.checksum()), (1000, 2000, 13, 0x1234));
        assert!(!u.is_empty());
        assert!(UdpPacket::new_checked(&b[..7]).is_none());
    }
}
