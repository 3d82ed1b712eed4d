//! Ethernet II framing: a checked view ([`EthernetFrame`]) and the EtherTypes the switch
//! knows. Pod ports refuse VLAN tags, so the IP header of every frame the switch reads past
//! layer 2 starts at [`HEADER_LEN`].

use super::Mac;

/// Length of an Ethernet II header: every L3 offset in `wire` is relative to it.
pub const HEADER_LEN: usize = 14;

/// EtherTypes.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// An 802.1ad (provider bridging) tag.
    pub const PROVIDER_BRIDGING: u16 = 0x88a8;
    /// A double VLAN tag (the pre-standard 0x9100).
    pub const VLAN_DOUBLE: u16 = 0x9100;
}

pub(crate) mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Why bytes are not an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated Ethernet header")]
pub struct Truncated;

/// A view over an Ethernet II frame. After [`EthernetFrame::new_checked`] no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view over a frame at least [`HEADER_LEN`] long.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// The destination MAC.
    pub fn dst(&self) -> Mac {
        mac(&self.buffer.as_ref()[field::DST])
    }

    /// The source MAC.
    pub fn src(&self) -> Mac {
        mac(&self.buffer.as_ref()[field::SRC])
    }

    /// The EtherType.
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets both addresses.
    pub fn set_macs(&mut self, dst: &Mac, src: &Mac) {
        let b = self.buffer.as_mut();
        b[field::DST].copy_from_slice(dst);
        b[field::SRC].copy_from_slice(src);
    }

    /// Writes the whole header.
    pub fn emit(&mut self, dst: &Mac, src: &Mac, ethertype: u16) {
        self.set_macs(dst, src);
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }
}

fn mac(b: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(b);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    static FRAME: [u8; 16] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0xaa, 0xbb];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!((f.dst(), f.src(), f.ethertype()), ([0xff; 6], [2, 0, 0, 0, 0, 1], ethertype::ARP));
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 16];
        EthernetFrame::new_checked(&mut buf[..]).unwrap().emit(
            &[0xff; 6],
            &[2, 0, 0, 0, 0, 1],
            ethertype::ARP,
        );
        assert_eq!(buf[..14], FRAME[..14]);
    }

    #[test]
    fn truncated() {
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]).err(), Some(Truncated));
    }
}
