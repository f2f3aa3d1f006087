//! An error with every cause, for log lines.
//!
//! Our error types print their own message only and leave the cause to `source()` (printing
//! both makes `anyhow` and any chain-walking reader show each cause twice). A log line is
//! not walked, so it formats the error with [`ErrorChain`].

use std::error::Error;
use std::fmt;

/// Displays an error and each of its sources, separated by `: `.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading targets file t.json")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "reading targets file t.json: no such file"
        );
    }
}
