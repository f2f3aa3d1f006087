//! Kubernetes label selectors in their string form, as `labelSelector=` and
//! `metricLabelSelector=` query parameters carry them.
//!
//! Owns: parsing the full grammar of `k8s.io/apimachinery/pkg/labels.Parse` — equality
//! (`a=b`, `a==b`, `a!=b`), set-based (`a in (x,y)`, `a notin (x)`), existence (`a`) and
//! non-existence (`!a`), comma-separated and ANDed — and matching label maps. Pure: no
//! Kubernetes types. Query decoding (`%2A`, `+`) happens before this, in the router.

use std::collections::BTreeMap;

/// Longest label name part and label value Kubernetes accepts.
const MAX_LABEL_LENGTH: usize = 63;
/// Longest `prefix/` part of a key (a DNS subdomain).
const MAX_PREFIX_LENGTH: usize = 253;

/// Most requirements one selector may have, and most values its `in`/`notin` sets may hold
/// together. Each costs a comparison per pod on every request, and selectors come from
/// clients; no Kubernetes object has more labels than this, and HPA selectors have a few.
pub const MAX_REQUIREMENTS: usize = 256;
pub const MAX_SET_VALUES: usize = 1024;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    /// Kubernetes semantics: `!=` and `notin` also match objects without the label.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(self.key());
        match self {
            Requirement::Equals(_, v) => value == Some(v),
            Requirement::NotEquals(_, v) => value != Some(v),
            Requirement::In(_, set) => value.is_some_and(|v| set.contains(v)),
            Requirement::NotIn(_, set) => value.is_none_or(|v| !set.contains(v)),
            Requirement::Exists(_) => value.is_some(),
            Requirement::DoesNotExist(_) => value.is_none(),
        }
    }
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A key is empty, too long, or has characters a label name cannot have.
    #[error("invalid label key {0:?}")]
    InvalidKey(String),
    /// A value is too long or has characters a label value cannot have.
    #[error("invalid label value {0:?}")]
    InvalidValue(String),
    /// The text does not follow the selector grammar.
    #[error("unable to parse requirement {0:?}: {1}")]
    Syntax(String, &'static str),
    /// More requirements or set values than [`MAX_REQUIREMENTS`] / [`MAX_SET_VALUES`].
    #[error("the selector is too large: at most {MAX_REQUIREMENTS} requirements and {MAX_SET_VALUES} set values")]
    TooLarge,
}

impl Selector {
    /// Parses a selector string. Whitespace around tokens is ignored, as Kubernetes does.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError::Syntax(text.to_owned(), "empty requirement"));
            }
            if requirements.len() == MAX_REQUIREMENTS {
                return Err(SelectorError::TooLarge);
            }
            requirements.push(parse_requirement(part)?);
        }
        let values: usize = requirements
            .iter()
            .map(|r| match r {
                Requirement::In(_, set) | Requirement::NotIn(_, set) => set.len(),
                _ => 0,
            })
            .sum();
        if values > MAX_SET_VALUES {
            return Err(SelectorError::TooLarge);
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Requirements on `key` (used for selector keys that are not pod labels, such as
    /// `model_name`), and the selector without them.
    pub fn split_off(&self, key: &str) -> (Vec<Requirement>, Selector) {
        let (on_key, rest): (Vec<_>, Vec<_>) = self
            .requirements
            .iter()
            .cloned()
            .partition(|r| r.key() == key);
        (on_key, Selector { requirements: rest })
    }
}

/// Splits at commas that are not inside a `( … )` value set.
fn split_top_level(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| SelectorError::Syntax(text.to_owned(), "unbalanced ')'"))?
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError::Syntax(text.to_owned(), "unbalanced '('"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_owned()));
    }
    for (op, build) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            validate_key(key)?;
            validate_value(value)?;
            return Ok(build(key.to_owned(), value.to_owned()));
        }
    }
    // `key in (a,b)` / `key notin (a,b)` / `key`
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    validate_key(key)?;
    if rest.is_empty() {
        return Ok(Requirement::Exists(key.to_owned()));
    }
    let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
        (true, set)
    } else if let Some(set) = rest.strip_prefix("in") {
        (false, set)
    } else {
        return Err(SelectorError::Syntax(
            part.to_owned(),
            "expected '=', '!=', 'in' or 'notin'",
        ));
    };
    let set = set.trim();
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Syntax(part.to_owned(), "expected '(values)'"))?;
    if inner.trim().is_empty() {
        return Err(SelectorError::Syntax(
            part.to_owned(),
            "for 'in', 'notin' operators, values set can't be empty",
        ));
    }
    let values = inner
        .split(',')
        .map(|v| {
            let v = v.trim();
            validate_value(v).map(|()| v.to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if negated {
        Requirement::NotIn(key.to_owned(), values)
    } else {
        Requirement::In(key.to_owned(), values)
    })
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LENGTH
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let valid = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX_LENGTH
                && prefix.split('.').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                && is_label_name(name)
        }
        None => is_label_name(key),
    };
    if valid {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey(key.to_owned()))
    }
}

fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(SelectorError::InvalidValue(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_grammar() {
        let s = Selector::parse(
            "app=vllm, tier!=cache,env in (prod, staging),gpu,!canary,zone notin (a)",
        )
        .unwrap();
        assert_eq!(s.requirements.len(), 6);
        let l = labels(&[
            ("app", "vllm"),
            ("env", "prod"),
            ("gpu", "h100"),
            ("zone", "b"),
        ]);
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("app", "vllm"), ("env", "dev"), ("gpu", "x")])));
        assert!(!s.matches(&labels(&[
            ("app", "vllm"),
            ("env", "prod"),
            ("gpu", "x"),
            ("canary", "1")
        ])));
    }

    #[test]
    fn double_equals_prefixed_keys_and_empty() {
        let s = Selector::parse("app.kubernetes.io/name==vllm").unwrap();
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "vllm")])));
        assert!(Selector::parse("").unwrap().is_empty());
        assert!(Selector::parse("  ").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn not_equals_matches_missing_label() {
        let s = Selector::parse("tier!=cache").unwrap();
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Selector::parse("a in (b"),
            Err(SelectorError::Syntax(..))
        ));
        assert!(matches!(
            Selector::parse("a b"),
            Err(SelectorError::Syntax(..))
        ));
        assert!(matches!(
            Selector::parse("-a=b"),
            Err(SelectorError::InvalidKey(_))
        ));
        assert!(matches!(
            Selector::parse("a=b c"),
            Err(SelectorError::InvalidValue(_))
        ));
        assert!(matches!(
            Selector::parse("a=b,,c"),
            Err(SelectorError::Syntax(..))
        ));
        assert!(matches!(
            Selector::parse("a in ()"),
            Err(SelectorError::Syntax(..))
        ));
    }

    #[test]
    fn large_selectors_are_refused() {
        let at_cap: Vec<String> = (0..MAX_REQUIREMENTS).map(|i| format!("k{i}=v")).collect();
        assert!(Selector::parse(&at_cap.join(",")).is_ok());
        let over: Vec<String> = (0..=MAX_REQUIREMENTS).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Selector::parse(&over.join(",")),
            Err(SelectorError::TooLarge)
        );
        let values: Vec<String> = (0..=MAX_SET_VALUES).map(|i| format!("v{i}")).collect();
        assert_eq!(
            Selector::parse(&format!("a in ({})", values.join(","))),
            Err(SelectorError::TooLarge)
        );
    }

    #[test]
    fn split_off_metric_label() {
        let s = Selector::parse("model_name=llama,app=vllm").unwrap();
        let (model, rest) = s.split_off("model_name");
        assert_eq!(
            model,
            vec![Requirement::Equals("model_name".into(), "llama".into())]
        );
        assert_eq!(rest.requirements.len(), 1);
    }
}
