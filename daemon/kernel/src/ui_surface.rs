//! UI surfaces: optional places in a console where an engine shows itself
//! (a panel, a form, a widget), declared in the manifest's `ui` list.
//!
//! ```text
//!  "ui": [{"name": "invoices", "kind": "panel", "entry": "ui/invoices.html",
//!          "description": "Open invoices"}]
//! ```
//!
//! Validation is strict, because consoles load what `entry` names: at most
//! [`UI_SURFACES_PER_ENGINE_MAX`](crate::limits::UI_SURFACES_PER_ENGINE_MAX) surfaces with unique names, and `entry` is
//! either a relative path inside the engine's bundle (segments of
//! `A-Z a-z 0-9 . _ ~ -`, no `.`/`..`/empty segments, no leading `/`) or an
//! `https://` URL without credentials, whitespace or characters that need
//! quoting. Anything else (`javascript:`, `data:`, `http://`, `../x`) is
//! refused at publish.

use crate::ids::{Name, check_description};
use crate::limits::Limit;
use crate::rejection::Rejection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What kind of surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum UiKind {
    Panel,
    Form,
    Widget,
}

impl UiKind {
    /// The lowercase name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            UiKind::Panel => "panel",
            UiKind::Form => "form",
            UiKind::Widget => "widget",
        }
    }
}

/// One UI surface an engine offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSurface {
    /// Unique within the manifest.
    pub name: Name,
    /// Panel, form or widget.
    pub kind: UiKind,
    /// A relative path inside the engine's bundle, or an `https://` URL.
    pub entry: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Checks a manifest's surfaces: the count, unique names, descriptions and entries.
pub fn validate(surfaces: &[UiSurface]) -> Result<(), Rejection> {
    Limit::UiSurfacesPerEngine.check(surfaces.len())?;
    let mut names = BTreeSet::new();
    for surface in surfaces {
        if !names.insert(&surface.name) {
            return Err(Rejection::FieldInvalid {
                field: "manifest.ui".into(),
                problem: "UI surface names must be unique".into(),
            });
        }
        check_description(&surface.description)?;
        check_entry(&surface.entry)?;
    }
    Ok(())
}

/// Characters allowed in a path segment (RFC 3986 "unreserved").
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Characters allowed in the path, query and fragment of an https URL: the
/// visible ASCII that needs no quoting in HTML attributes or URLs.
fn is_url_char(c: char) -> bool {
    is_unreserved(c)
        || matches!(c, '/' | '?' | '#' | '=' | '&' | '%' | '+' | ',' | ';' | ':' | '!' | '$' | '*' | '(' | ')')
}

fn check_entry(entry: &str) -> Result<(), Rejection> {
    let invalid =
        |problem: &'static str| Rejection::FieldInvalid { field: "manifest.ui.entry".into(), problem: problem.into() };
    if entry.is_empty() {
        return Err(Rejection::FieldRequired { field: "manifest.ui.entry".into() });
    }
    Limit::UiEntryBytes.check(entry.len())?;
    if let Some(rest) = entry.strip_prefix("https://") {
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
        let is_host = !host.is_empty()
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let is_port = (port.is_empty() && !authority.ends_with(':'))
            || (!port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit()));
        if !is_host || !is_port {
            return Err(invalid(
                "an https URL needs a host name (letters, digits, '-', '.'), an optional port and no credentials",
            ));
        }
        if !path.chars().all(is_url_char) {
            return Err(invalid("an https URL may hold only unreserved and sub-delimiter ASCII characters"));
        }
        return Ok(());
    }
    let is_relative_path = entry
        .split('/')
        .all(|segment| !segment.is_empty() && segment != "." && segment != ".." && segment.chars().all(is_unreserved));
    if !is_relative_path {
        return Err(invalid(
            "must be a relative path inside the bundle (segments of letters, digits, '.', '_', '~', '-'; no '.' or \
             '..' segments) or an https:// URL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_relative_paths_or_https_urls() {
        for good in [
            "ui/index.html",
            "panel.js",
            "a/b~c/d_e-f.v2.html",
            "https://console.example.com/engines/billing?tab=1#top",
            "https://localhost:8443/x",
            "https://example.com",
        ] {
            assert_eq!(check_entry(good), Ok(()), "{good}");
        }
        for bad in [
            "/abs/path",
            "../escape",
            "ui/../../x",
            "./x",
            "a//b",
            "dir/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "http://example.com/x",
            "https://user:pw@example.com/",
            "https://",
            "https://exa mple.com",
            "https://example.com:/x",
            "https://example.com:123456/x",
            "https://example.com/<script>",
            "https://example.com/a b",
            "ui\\index.html",
            "ui/ind ex.html",
            "é.html",
        ] {
            assert!(check_entry(bad).is_err(), "{bad}");
        }
        assert!(matches!(check_entry(""), Err(Rejection::FieldRequired { .. })));
        let long = "a".repeat(crate::limits::UI_ENTRY_BYTES_MAX + 1);
        assert!(matches!(check_entry(&long), Err(Rejection::LimitExceeded { limit: Limit::UiEntryBytes, .. })));
    }
}
