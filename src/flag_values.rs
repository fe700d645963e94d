//! Value types and parsers that both the server's flags (`config`) and the report client's flags
//! (`report::args`) use, kept apart from both so neither imports the other for them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A credential: usable through `expose`, printed by `Debug` as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self(text.trim().to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A humantime duration of at least one second (`10s`, `1h 30m`).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_trimmed_never_empty_and_never_printed() {
        let secret: Secret = " s3cret\n".parse().unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!("  ".parse::<Secret>(), Err("must not be empty".to_owned()));
    }

    #[test]
    fn durations_below_one_second_are_refused() {
        assert_eq!(positive_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            positive_duration("500ms"),
            Err("must be at least 1s".to_owned())
        );
        assert!(positive_duration("soon").is_err());
    }
}
