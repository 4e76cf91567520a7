//! The syntax of the values flags and the policy file take alike.

use std::ops::RangeInclusive;

/// `FIRST-LAST`, a range of ids with `0 < FIRST <= LAST`.
pub fn parse_id_range(s: &str) -> Result<RangeInclusive<u32>, String> {
    let number = |n: &str| (n.trim().parse::<u32>()).map_err(|_| format!("`{n}` is not an id"));
    let (first, last) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a range FIRST-LAST"))?;
    let (first, last) = (number(first)?, number(last)?);
    if first == 0 || first > last {
        return Err(format!("`{s}` must be FIRST-LAST with 0 < FIRST <= LAST"));
    }
    Ok(first..=last)
}

/// `UID[:GID]` (GID defaults to UID).
pub fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let number = |n: &str| {
        n.parse::<u32>()
            .map_err(|_| format!("`{n}` is not a user or group id"))
    };
    match s.split_once(':') {
        Some((uid, gid)) => Ok((number(uid)?, number(gid)?)),
        None => number(s).map(|uid| (uid, uid)),
    }
}

/// A number of bytes, as flags and the policy file take it: a number, or
/// a number with a unit: `k`, `M`, `G`, `T` (or `KiB`, `MiB`, `GiB`,
/// `TiB`: powers of 1024) or `kB`, `MB`, `GB`, `TB` (powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// The units of [`Bytes`], each with the number of bytes it stands for.
const UNITS: [(&str, u64); 15] = [
    ("", 1),
    ("B", 1),
    ("k", 1 << 10),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("kB", 1000),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("T", 1 << 40),
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
];

impl Bytes {
    /// As a `usize`; past what one holds, the largest.
    pub fn to_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl std::str::FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> Result<Bytes, String> {
        let bad = || {
            format!(
                "`{s}` is not a size: give bytes, or a number with a unit (k, M, G, KiB, MiB, GiB, kB, MB, GB)"
            )
        };
        let text = s.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let unit = unit.trim_start();
        let (_, scale) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(bad)?;
        let number: u64 = number.parse().map_err(|_| bad())?;
        number
            .checked_mul(*scale)
            .map(Bytes)
            .ok_or_else(|| format!("`{s}` is more bytes than there can be"))
    }
}

/// The largest binary unit the size is a whole number of (`16MiB`).
impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let binary = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        match binary
            .iter()
            .find(|(_, scale)| self.0 != 0 && self.0.is_multiple_of(*scale))
        {
            Some((name, scale)) => write!(f, "{}{name}", self.0 / scale),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A number of bytes or a string with a unit, as the flag takes it.
impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let Written(text) = Written::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The limits `--rlimit NAME=VALUE` sets, each with whether its value
/// is a size (which takes units, as [`Bytes`]).
pub const RLIMITS: [(&str, bool); 5] = [
    ("cpu", false),
    ("as", true),
    ("nofile", false),
    ("nproc", false),
    ("fsize", true),
];

/// `NAME=VALUE` of `--rlimit`: the limit's name and its value.
pub fn parse_rlimit(flag: &str) -> Result<(&str, u64), String> {
    let (name, value) = (flag.split_once('=')).ok_or("--rlimit takes NAME=VALUE")?;
    let names = RLIMITS.map(|(name, _)| name).join(", ");
    let (_, size) = (RLIMITS.iter().find(|(known, _)| *known == name))
        .ok_or_else(|| format!("unknown limit `{name}` ({names})"))?;
    let value = match size {
        true => value.parse::<Bytes>()?.0,
        false => (value.parse()).map_err(|_| format!("`{value}` is not a number"))?,
    };
    Ok((name, value))
}

/// A number or a string, kept as written: a value the policy file hands
/// on to a flag's own parser (an rlimit's, which may be a size).
pub struct Written(pub String);

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Written, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Written, E> {
                Ok(Written(n.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Written, E> {
                Ok(Written(n.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Written, E> {
                Ok(Written(s.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A directory grant: the host directory `host` as the guest's `guest`
/// (`--dir HOST[::GUEST]`, `--dir-ro`, `[[dir]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DirGrant {
    pub host: std::path::PathBuf,
    pub guest: String,
}

impl DirGrant {
    /// `host` as the guest path `guest`, which must be absolute (or `.`,
    /// the guest's working directory).
    pub fn new(host: std::path::PathBuf, guest: &str) -> Result<DirGrant, String> {
        if guest.is_empty() {
            return Err("no guest path after `::`".into());
        }
        if !guest.starts_with('/') && guest != "." {
            let absolute = format!("/{}", guest.trim_start_matches("./"));
            return Err(format!(
                "the guest path `{guest}` is relative: give an absolute one, such as `{absolute}`"
            ));
        }
        Ok(DirGrant {
            host,
            guest: guest.to_owned(),
        })
    }
}

/// `HOST[::GUEST]`; without GUEST, the guest path is HOST as written.
pub fn parse_dir(s: &str) -> Result<DirGrant, String> {
    match s.split_once("::") {
        Some((host, guest)) => DirGrant::new(host.into(), guest),
        None => Ok(DirGrant {
            host: s.into(),
            guest: s.to_owned(),
        }),
    }
}

/// `HOST::GUEST`.
impl std::fmt::Display for DirGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.host.display(), self.guest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_the_usual_units() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("1k", 1024),
            ("1K", 1024),
            ("1KiB", 1024),
            ("1kB", 1000),
            ("16M", 16 << 20),
            ("16MiB", 16 << 20),
            ("2MB", 2_000_000),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("3GB", 3_000_000_000),
            ("512 MiB", 512 << 20),
            ("2T", 2 << 40),
            ("7B", 7),
        ] {
            assert_eq!(text.parse(), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn a_size_that_is_not_one_names_the_units() {
        for text in ["", "k", "1kg", "-1", "1.5M", "M1"] {
            let error = text.parse::<Bytes>().unwrap_err();
            assert!(error.contains("is not a size"), "{text}: {error}");
            assert!(error.contains("k, M, G, KiB, MiB, GiB"), "{error}");
        }
        let error = "20000000T".parse::<Bytes>().unwrap_err();
        assert!(error.contains("more bytes than there can be"), "{error}");
    }

    #[test]
    fn a_size_is_shown_in_the_largest_unit_it_is_a_whole_number_of() {
        let shown = [0, 1000, 1024, 16 << 20, (1 << 30) + 1, 3 << 40].map(|n| Bytes(n).to_string());
        assert_eq!(shown, ["0", "1000", "1KiB", "16MiB", "1073741825", "3TiB"]);
        for bytes in [0, 1000, 1024, 16 << 20, 5 << 30] {
            assert_eq!(Bytes(bytes).to_string().parse(), Ok(Bytes(bytes)));
        }
    }

    #[test]
    fn an_rlimit_of_bytes_takes_units_and_the_others_numbers() {
        assert_eq!(parse_rlimit("as=1G"), Ok(("as", 1 << 30)));
        assert_eq!(parse_rlimit("fsize=10MiB"), Ok(("fsize", 10 << 20)));
        assert_eq!(parse_rlimit("nofile=1024"), Ok(("nofile", 1024)));
        assert_eq!(
            parse_rlimit("nofile=1k"),
            Err("`1k` is not a number".into())
        );
        let unknown = parse_rlimit("stack=1").unwrap_err();
        assert_eq!(
            unknown,
            "unknown limit `stack` (cpu, as, nofile, nproc, fsize)"
        );
    }

    #[test]
    fn a_guest_path_given_is_absolute_and_one_left_out_is_the_host_path_as_written() {
        let shown = |s: &str| parse_dir(s).map(|d| d.to_string());
        assert_eq!(shown("data"), Ok("data::data".into()));
        assert_eq!(shown("/srv/a::/data"), Ok("/srv/a::/data".into()));
        assert_eq!(shown("/srv/a::."), Ok("/srv/a::.".into()));
        let relative =
            "the guest path `relative` is relative: give an absolute one, such as `/relative`";
        assert_eq!(shown("/srv::relative"), Err(relative.into()));
        assert_eq!(shown("/srv::"), Err("no guest path after `::`".into()));
    }
}
