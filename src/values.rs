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
