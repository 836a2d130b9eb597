//! The one secret-string type of pxs: tokens in configs, on the wire and in memory.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string (a token): serialized as the plain string where a protocol carries it, never
/// printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// `text` (a URL, or an argument holding one) fit for a log: the value of every query parameter
/// replaced by `<redacted>`. A session server puts the session's streamer credential there
/// (`?token=`); the text itself is used unchanged.
pub fn redact_query(text: &str) -> String {
    let Some((base, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=<redacted>"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_for_logs_and_nothing_else() {
        assert_eq!(
            redact_query("ws://127.0.0.1:9/?token=s3cret&x=1&flag"),
            "ws://127.0.0.1:9/?token=<redacted>&x=<redacted>&flag"
        );
        assert_eq!(
            redact_query("-PixelStreamingURL=ws://h:1/?token=abc"),
            "-PixelStreamingURL=ws://h:1/?token=<redacted>"
        );
        assert_eq!(redact_query("ws://h:1/p"), "ws://h:1/p");
        assert_eq!(redact_query("-RenderOffScreen"), "-RenderOffScreen");
    }

    #[test]
    fn debug_output_is_redacted_and_json_is_the_plain_string() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""hunter2""#);
        assert_eq!(serde_json::from_str::<Secret>(r#""hunter2""#).unwrap(), s);
    }
}
