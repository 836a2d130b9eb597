//! Durations in configuration files and flags, written the way people write them: "90s",
//! "15m", "2h", "500ms", "1h30m". Shared by every pxs config so they all read alike.

use std::time::Duration;

/// Parses "90s", "15m", "2h", "500ms", "1h30m"; "0", "off" and "none" are `None`.
pub fn parse(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if t == "off" || t == "0" || t == "none" {
        return Ok(None);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{t}` needs a unit: ms, s, m or h (as in \"90s\")"))?;
        if digits == 0 {
            return Err(format!("`{t}` is not a duration like \"90s\" or \"15m\""));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{t}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!("`{t}`: unknown unit `{unit}` (use ms, s, m or h)"));
            }
        };
        total = total.saturating_add(d);
    }
    Ok((!total.is_zero()).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("1h30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse("off"), Ok(None));
        assert!(parse("15").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("").is_err());
    }
}
