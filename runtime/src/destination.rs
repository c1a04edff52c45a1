//! Which addresses outbound requests may reach. Provider calls must not be a
//! way into the server's own network: loopback, private, link-local (cloud
//! metadata), unique-local, multicast, unspecified, broadcast, CGNAT and the
//! documentation and benchmarking ranges are refused, also when written as
//! IPv4-mapped, NAT64 or 6to4 IPv6 addresses, unless the operator lists
//! them in an [`AllowPrivate`].
//!
//! The outbound connector applies [`AllowPrivate::allows`] to every address
//! a name resolves to, at connect time; the API applies
//! [`AllowPrivate::refused_host`] to hosts it stores, for an early error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// IPv4 ranges outbound requests may not reach, most specific first.
const RESTRICTED_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 32), "unspecified"),
    (v4(0, 0, 0, 0, 8), "\"this network\""),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local (cloud metadata)"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges outbound requests may not reach, most specific first. The
/// forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that
/// address instead, in [`restricted_range`].
const RESTRICTED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo"),
    (v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignment",
    ),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// The kind of restricted range `ip` is in (`"loopback"`, `"private"`, …),
/// or `None` for an address outbound requests may reach.
pub fn restricted_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => RESTRICTED_V4
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind),
        IpAddr::V6(ip) => match embedded_ipv4(ip) {
            Some(inner) => restricted_range(IpAddr::V4(inner)),
            None => RESTRICTED_V6
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, kind)| *kind),
        },
    }
}

/// An IPv4 address as `inet_aton` (and so `getaddrinfo`) reads it: one to
/// four parts, each decimal, octal (`0` prefix) or hex (`0x`), the last one
/// filling the remaining bytes — `2130706433`, `127.1` and `0x7f.1` are all
/// 127.0.0.1.
pub fn parse_ipv4_loose(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        if !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        // `0x` alone is zero for inet_aton.
        let value = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 0xff) {
        return None;
    }
    let free_bits = 32 - 8 * leading.len() as u32;
    if free_bits < 32 && *last >= 1 << free_bits {
        return None;
    }
    let mut addr = *last;
    for (i, v) in leading.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(addr))
}

/// Names that always mean a restricted address, and the address they stand
/// for (RFC 6761 `localhost`, the cloud metadata service).
fn well_known_name(name: &str) -> Option<IpAddr> {
    if name == "localhost" || name.ends_with(".localhost") {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else if name == "metadata.google.internal" {
        Some(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)))
    } else {
        None
    }
}

/// A host as compared with allowed names: lower case, without brackets or
/// a trailing dot.
fn normalise(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// One entry of an [`AllowPrivate`] list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Addresses in this range are allowed.
    Range(IpNet),
    /// This name may resolve to restricted addresses.
    Name(String),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Range(net) => write!(f, "{net}"),
            Entry::Name(name) => f.write_str(name),
        }
    }
}

/// Why an [`AllowPrivate`] list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address, a CIDR range (e.g. 10.0.0.0/8) or a host name")]
pub struct AllowPrivateError(String);

/// The operator's exceptions to the restricted ranges: CIDR ranges (or
/// single addresses) that outbound requests may reach, and host names that
/// may resolve to restricted addresses. Empty by default: no exceptions.
/// Parsed from a comma-separated list such as `127.0.0.0/8,::1/128,llm.internal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub struct AllowPrivate {
    entries: Vec<Entry>,
}

impl AllowPrivate {
    /// Whether `ip` may be connected to: it is in no restricted range, or in
    /// an allowed one (an IPv6 form of an IPv4 address also when that
    /// IPv4 address is).
    pub fn allows(&self, ip: IpAddr) -> bool {
        if restricted_range(ip).is_none() {
            return true;
        }
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.entries.iter().any(|e| match e {
            Entry::Range(net) => net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)),
            Entry::Name(_) => false,
        })
    }

    /// Whether `host` is a name the operator allows to resolve to
    /// restricted addresses.
    pub fn allows_name(&self, host: &str) -> bool {
        let host = normalise(host);
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Name(name) if *name == host))
    }

    /// The early check for a host about to be stored (a base URL's, a
    /// manifest's): the restricted range it names, when it is an IP address
    /// (also in `inet_aton` forms such as `2130706433` or `127.1`),
    /// `localhost` or `*.localhost`, or `metadata.google.internal`, and not
    /// allowed. Other names pass here; their addresses are checked when a
    /// connection is made.
    pub fn refused_host(&self, host: &str) -> Option<&'static str> {
        if self.allows_name(host) {
            return None;
        }
        let name = normalise(host);
        let ip = name
            .parse::<IpAddr>()
            .ok()
            .or_else(|| parse_ipv4_loose(&name).map(IpAddr::V4))
            .or_else(|| well_known_name(&name))?;
        if self.allows(ip) {
            None
        } else {
            restricted_range(ip)
        }
    }

    /// True when there are no exceptions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromStr for AllowPrivate {
    type Err = AllowPrivateError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| AllowPrivate { entries })
    }
}

fn parse_entry(text: &str) -> Result<Entry, AllowPrivateError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Entry::Range(net.trunc()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Entry::Range(IpNet::from(ip)));
    }
    let name = normalise(text);
    let is_name = !name.is_empty()
        && name.len() <= 253
        && !name.contains('/')
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        // All-numeric names are addresses in another spelling, not names.
        && parse_ipv4_loose(&name).is_none();
    if is_name {
        Ok(Entry::Name(name))
    } else {
        Err(AllowPrivateError(text.to_string()))
    }
}

impl fmt::Display for AllowPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<AllowPrivate> for Vec<String> {
    fn from(list: AllowPrivate) -> Self {
        list.entries.iter().map(ToString::to_string).collect()
    }
}

impl TryFrom<Vec<String>> for AllowPrivate {
    type Error = AllowPrivateError;

    fn try_from(list: Vec<String>) -> Result<Self, Self::Error> {
        list.iter()
            .map(|e| parse_entry(e.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| AllowPrivate { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn restricted_ranges_are_classified() {
        let table: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("\"this network\"")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("100.127.255.254", Some("shared (CGNAT)")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("169.254.169.254", Some("link-local (cloud metadata)")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.0.0.170", Some("IETF protocol assignment")),
            ("192.0.2.10", Some("documentation")),
            ("192.88.99.1", Some("6to4 relay")),
            ("192.168.1.1", Some("private")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.5", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::7f00:1", Some("IPv4-compatible (deprecated)")),
            ("::ffff:127.0.0.1", Some("loopback")),
            (
                "::ffff:169.254.169.254",
                Some("link-local (cloud metadata)"),
            ),
            ("::ffff:0:10.1.2.3", Some("private")),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::192.168.0.1", Some("private")),
            ("64:ff9b:1::1", Some("local-use NAT64")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:a9fe:a9fe::1", Some("link-local (cloud metadata)")),
            ("2002:c0a8:101::", Some("private")),
            ("2001::1", Some("Teredo")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("100::1", Some("discard-only")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("fec0::1", Some("site-local (deprecated)")),
            ("ff02::1", Some("multicast")),
            // Reachable.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.169.0.1", None),
            ("198.20.0.1", None),
            ("223.255.255.255", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2002:808:808::1", None),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
            ("2001:4860:4860::8888", None),
        ];
        for (addr, expected) in table {
            assert_eq!(restricted_range(ip(addr)), *expected, "{addr}");
        }
    }

    #[test]
    fn inet_aton_forms_are_read_like_getaddrinfo() {
        let table: &[(&str, Option<[u8; 4]>)] = &[
            ("2130706433", Some([127, 0, 0, 1])),
            ("127.1", Some([127, 0, 0, 1])),
            ("127.0.1", Some([127, 0, 0, 1])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("0177.0.0.1", Some([127, 0, 0, 1])),
            ("0x7f000001", Some([127, 0, 0, 1])),
            ("0", Some([0, 0, 0, 0])),
            ("169.254.43518", Some([169, 254, 169, 254])),
            ("10.0.0.1", Some([10, 0, 0, 1])),
            ("256.1", None),
            ("1.2.3.4.5", None),
            ("1..2", None),
            ("08", None),
            ("4294967296", None),
            ("api.openai.com", None),
            ("", None),
            ("1.2.3.256", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                parse_ipv4_loose(text),
                expected.map(Ipv4Addr::from),
                "{text}"
            );
        }
    }

    #[test]
    fn exceptions_allow_ranges_and_names() {
        let none = AllowPrivate::default();
        assert!(!none.allows(ip("127.0.0.1")));
        assert!(none.allows(ip("8.8.8.8")));
        let list: AllowPrivate = "127.0.0.0/8, ::1/128,LLM.internal.,10.1.2.3"
            .parse()
            .unwrap();
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("127.9.9.9")));
        assert!(list.allows(ip("::ffff:127.0.0.1")));
        assert!(list.allows(ip("::1")));
        assert!(list.allows(ip("10.1.2.3")));
        assert!(!list.allows(ip("10.1.2.4")));
        assert!(!list.allows(ip("169.254.169.254")));
        assert!(!list.allows(ip("::")));
        assert!(list.allows_name("llm.internal"));
        assert!(list.allows_name("LLM.Internal."));
        assert!(!list.allows_name("other.internal"));
        assert_eq!(
            list.to_string(),
            "127.0.0.0/8,::1/128,llm.internal,10.1.2.3/32"
        );
        assert_eq!("".parse::<AllowPrivate>().unwrap(), AllowPrivate::default());
        for bad in ["10.0.0.0/33", "http://x", "a b", "1.2.3.4.5/8", "127.1"] {
            assert!(bad.parse::<AllowPrivate>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<AllowPrivate>(&json).unwrap(), list);
    }

    #[test]
    fn stored_hosts_are_checked_early() {
        let none = AllowPrivate::default();
        for (host, kind) in [
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("[::1]", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("2130706433", "loopback"),
            ("127.1", "loopback"),
            ("0x7f.1", "loopback"),
            ("10.0.0.8", "private"),
            ("192.168.0.1", "private"),
            ("[::ffff:10.0.0.1]", "private"),
            ("localhost", "loopback"),
            ("LOCALHOST.", "loopback"),
            ("api.localhost", "loopback"),
            ("metadata.google.internal", "link-local (cloud metadata)"),
        ] {
            assert_eq!(none.refused_host(host), Some(kind), "{host}");
        }
        for host in [
            "api.openai.com",
            "8.8.8.8",
            "[2606:4700::1111]",
            "llm.internal",
        ] {
            assert_eq!(none.refused_host(host), None, "{host}");
        }
        let loopback: AllowPrivate = "127.0.0.0/8,::1/128,metadata.google.internal"
            .parse()
            .unwrap();
        for host in [
            "127.0.0.1",
            "[::1]",
            "2130706433",
            "localhost",
            "metadata.google.internal",
        ] {
            assert_eq!(loopback.refused_host(host), None, "{host}");
        }
        assert_eq!(loopback.refused_host("10.0.0.1"), Some("private"));
    }
}
