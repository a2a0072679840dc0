//! MariaDB GTIDs (`domain-server-seq`) and GTID positions (one GTID per
//! replication domain), as the server prints them in `@@gtid_binlog_pos`.

use std::collections::BTreeMap;
use std::fmt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl Gtid {
    pub fn parse(text: &str) -> Result<Gtid, String> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let bad = || format!("'{text}' is not a GTID (domain-server-sequence, e.g. 0-1-42)");
        if parts.len() != 3 {
            return Err(bad());
        }
        Ok(Gtid {
            domain: parts[0].parse().map_err(|_| bad())?,
            server: parts[1].parse().map_err(|_| bad())?,
            seq: parts[2].parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// The last GTID applied in each domain: everything up to it (per domain) is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GtidPos(BTreeMap<u32, Gtid>);

impl GtidPos {
    /// Parses `0-1-42,1-7-9` (empty text is the empty position).
    pub fn parse(text: &str) -> Result<GtidPos, String> {
        let mut map = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = Gtid::parse(part)?;
            if map.insert(g.domain, g).is_some() {
                return Err(format!(
                    "'{text}' names domain {} twice; a position holds one GTID per domain",
                    g.domain
                ));
            }
        }
        Ok(GtidPos(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `g` is at or before this position (so a snapshot at this
    /// position already holds it). Sequence numbers grow within a domain.
    pub fn contains(&self, g: &Gtid) -> bool {
        self.0.get(&g.domain).is_some_and(|have| g.seq <= have.seq)
    }

    /// Whether every domain of `other` is at or before this position.
    pub fn includes(&self, other: &GtidPos) -> bool {
        other.0.values().all(|g| self.contains(g))
    }

    pub fn advance(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }

    /// The GTID of each domain, in domain order.
    pub fn iter(&self) -> impl Iterator<Item = &Gtid> {
        self.0.values()
    }

    pub fn get(&self, domain: u32) -> Option<&Gtid> {
        self.0.get(&domain)
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for GtidPos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for GtidPos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GtidPos::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_the_server_prints() {
        let p = GtidPos::parse("0-1-42,1-7-9").unwrap();
        assert!(p.contains(&Gtid::parse("0-2-42").unwrap()));
        assert!(!p.contains(&Gtid::parse("0-1-43").unwrap()));
        assert!(!p.contains(&Gtid::parse("2-1-1").unwrap()));
        assert_eq!(p.to_string(), "0-1-42,1-7-9");
        assert!(GtidPos::parse("").unwrap().is_empty());
        assert!(GtidPos::parse("0-1-1,0-2-2").is_err());
        assert!(Gtid::parse("0-1").is_err());
        assert!(Gtid::parse("a-1-2").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(gs in proptest::collection::btree_map(0u32..50, (1u32..u32::MAX, 0u64..u64::MAX), 0..6)) {
            let mut p = GtidPos::default();
            for (domain, (server, seq)) in gs {
                p.advance(Gtid { domain, server, seq });
            }
            let back = GtidPos::parse(&p.to_string()).unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert!(back.includes(&p) && p.includes(&back));
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = GtidPos::parse(&text);
        }
    }
}
