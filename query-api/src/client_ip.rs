//! Which client a request comes from, for the rate limit and the audit.
//!
//! The socket peer, unless the peer is one of our `TRUSTED_PROXIES`: then the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Everything left of that entry was
//! written by someone we do not trust, so a client cannot pick its own address by sending the
//! header; and a peer we do not trust gets no say at all.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8,127.0.0.1/32` (a bare address means just that address).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("TRUSTED_PROXIES: {item:?} is not a CIDR or an address"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut leftmost = None;
        // Several headers are one list, in order (RFC 9110 §5.3).
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                // Garbage where an address should be: nothing further left can be trusted.
                return leftmost.unwrap_or(peer);
            };
            if !self.trusts(ip) {
                return ip;
            }
            leftmost = Some(ip);
        }
        leftmost.unwrap_or(peer)
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port or IPv6 brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, from dual-stack sockets) are IPv4 clients.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().expect("header"));
        h
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(none.client_ip(peer, &headers("1.2.3.4")), peer);
    }

    #[test]
    fn trusted_peers_give_the_rightmost_untrusted_entry() {
        let trusted = TrustedProxies::parse("127.0.0.1/32, 10.0.0.0/8").expect("parse");
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        let client = |xff| trusted.client_ip(peer, &headers(xff)).to_string();
        assert_eq!(client("6.6.6.6, 1.2.3.4, 10.1.1.1"), "1.2.3.4");
        assert_eq!(client("1.2.3.4:5678"), "1.2.3.4");
        assert_eq!(client("[2001:db8::1]"), "2001:db8::1");
        assert_eq!(client("10.1.1.1"), "10.1.1.1");
        assert_eq!(client("junk, 10.1.1.1"), "10.1.1.1");
        assert_eq!(trusted.client_ip(peer, &HeaderMap::new()), peer);
        assert!(TrustedProxies::parse("nope").is_err());
    }
}
