//! A fast existence check for an nftables table, over nfnetlink.
//!
//! Rules cannot be added idempotently (`add rule` appends a duplicate), so a table's fixed rules
//! must be created exactly once: callers check whether their table exists and send its
//! definition only when it does not. Asking `nft` costs a process (about 2 ms); asking the
//! kernel directly with one `NFT_MSG_GETTABLE` request costs a few microseconds.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::Family;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HEADER_LEN: usize = 16;
const ENOENT: i32 = 2;

/// Whether table `name` of `family` exists in the calling thread's network namespace.
pub fn table_exists(family: Family, name: &str) -> io::Result<bool> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&get_table_request(family, name), 0)?;
    loop {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset + NLMSG_HEADER_LEN <= reply.len() {
            let length = u32::from_ne_bytes(reply[offset..offset + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(reply[offset + 4..offset + 6].try_into().expect("2 bytes"));
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes(
                    reply[offset + NLMSG_HEADER_LEN..offset + NLMSG_HEADER_LEN + 4]
                        .try_into()
                        .expect("4 bytes"),
                );
                return match -code {
                    0 => Ok(true),
                    ENOENT => Ok(false),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
            if length == 0 {
                break;
            }
            offset += length.next_multiple_of(4);
        }
    }
}

/// The request: `nlmsghdr`, `nfgenmsg` and one `NFTA_TABLE_NAME` attribute.
fn get_table_request(family: Family, name: &str) -> Vec<u8> {
    let mut attribute_value = name.as_bytes().to_vec();
    attribute_value.push(0);
    let attribute_len = 4 + attribute_value.len();
    let total = NLMSG_HEADER_LEN + 4 + attribute_len.next_multiple_of(4);
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&(total as u32).to_ne_bytes());
    message.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    message.push(family.nfproto());
    message.push(0); // NFNETLINK_V0
    message.extend_from_slice(&0u16.to_be_bytes()); // resource id
    message.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    message.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    message.extend_from_slice(&attribute_value);
    message.resize(total, 0);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_aligned_and_names_the_table() {
        let request = get_table_request(Family::Inet, "podnet-cni");
        assert_eq!(request.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(request[0..4].try_into().unwrap()) as usize,
            request.len()
        );
        assert_eq!(request[16], 1, "NFPROTO_INET");
        assert_eq!(&request[24..34], b"podnet-cni");
        assert_eq!(request[34], 0, "NUL-terminated");
    }
}
