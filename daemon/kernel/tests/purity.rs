//! The kernel stays pure: its dependencies are a short allowlist, and its
//! source names no clock, randomness, I/O, async runtime or hash-ordered map.
//!
//! `clippy.toml` catches calls to disallowed APIs; this test catches the
//! dependency being added at all, and spellings clippy does not see (a `use`
//! that is never called, an `async fn`). Comments and string literals are
//! ignored, so documentation may name what the kernel avoids.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Everything `[dependencies]` may contain.
const DEPENDENCIES_ALLOWED: &[&str] = &[
    "serde",
    "serde_json",
    "serde_json_canonicalizer",
    "semver",
    "sha2",
    "hex",
    "ed25519-dalek",
    "thiserror",
    "bincode",
    "serde_bytes",
    // Checks action schemas against their draft's meta-schema at publish.
    // Pure for the kernel's use: without default features it has no HTTP or
    // file resolution, and `action_schema` only ever builds with the offline
    // retriever and an explicit, allowlisted draft, so even a build that
    // unifies those features on never reaches them. It links getrandom
    // through ahash, which seeds hash maps inside the crate; a verdict is a
    // boolean over the whole schema and the reported problem is the least of
    // all violations, so neither depends on map order (see
    // `the_jsonschema_dependency_does_no_io` below and `action_schema.rs`).
    "jsonschema",
    // Rego policies. Pure Rust and pure as built: without its `std` feature
    // regorus links no clock (its execution timer has no time source), no
    // randomness (`rand.intn` and the `rand` crate are behind `std`) and no
    // I/O builtin (`time`, `uuid`, `http`, `opa-runtime` are off); the RVM's
    // instruction budget bounds every evaluation. See
    // `regorus_is_built_without_clock_randomness_or_io` below.
    "regorus",
    // Not used by the kernel's code: listed only to turn on indexmap's `std`
    // feature, which regorus's RVM needs for `IndexMap<K, V>` with the default
    // hasher. indexmap iterates in insertion order whatever the hasher's keys,
    // so the seeded `RandomState` affects lookup speed, never a result.
    "indexmap",
    // Persistent ordered maps and vectors (OrdMap, Vector): ordered iteration,
    // no hashing; the kernel uses none of its hash-based types.
    "imbl",
    // Capability tokens (JWT, EdDSA) in `token.rs`. Verification only: the
    // kernel turns off jsonwebtoken's `exp`/`nbf` checks, the only code that
    // reads its clock (`get_current_timestamp` runs only when one is on), and
    // checks times against the caller's `now_ms`. Its `rust_crypto` backend
    // links `rand` for key generation, which verification never calls.
    "jsonwebtoken",
];

/// Crates that would bring I/O, clocks, randomness or consensus into the kernel.
const DEPENDENCIES_FORBIDDEN: &[&str] =
    &["tokio", "openraft", "rocksdb", "tonic", "prost", "redis", "rand", "rand_core", "getrandom", "std::time"];

/// Tokens the kernel's code (outside comments and strings) must not contain, with why.
const TOKENS_FORBIDDEN: &[(&str, &str)] = &[
    ("SystemTime", "time comes from the leader-stamped Proposal"),
    ("Instant::now", "time comes from the leader-stamped Proposal"),
    ("std::time", "time comes from the leader-stamped Proposal"),
    ("HashMap", "iteration order differs between processes"),
    ("HashSet", "iteration order differs between processes"),
    ("thread_rng", "the kernel draws no randomness"),
    ("rand::", "the kernel draws no randomness"),
    ("getrandom", "the kernel draws no randomness"),
    ("std::fs", "the kernel performs no I/O"),
    ("std::net", "the kernel performs no I/O"),
    ("std::env", "the kernel reads no environment"),
    ("std::process", "the kernel performs no I/O"),
    ("std::thread", "the kernel is single-threaded and synchronous"),
    ("println!", "the kernel performs no I/O"),
    ("eprintln!", "the kernel performs no I/O"),
    ("tokio", "the kernel is synchronous"),
    ("async fn", "the kernel is synchronous"),
    (".await", "the kernel is synchronous"),
    ("f32", "no floats in replicated state"),
    ("f64", "no floats in replicated state"),
];

/// Exceptions to [`TOKENS_FORBIDDEN`]: (file under `src/`, token, why it is harmless).
const TOKENS_ALLOWED_IN: &[(&str, &str, &str)] =
    &[("manifest.rs", "f64", "UniqueKeys visits JSON numbers while checking for repeated keys and keeps nothing")];

fn kernel_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The dependency names declared in `section` of a Cargo manifest, in both
/// the `name = ...` / `name.workspace = true` form and the `[section.name]` form.
fn dependencies_in(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            current = header.trim().to_owned();
            if let Some(name) = current.strip_prefix(section).and_then(|rest| rest.strip_prefix('.')) {
                names.insert(name.to_owned());
            }
            continue;
        }
        if current != section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        let name = key.split('.').next().unwrap_or_default().trim().trim_matches('"');
        names.insert(name.to_owned());
    }
    names
}

/// Section headers of a Cargo manifest.
fn sections_in(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')))
        .map(|header| header.trim().to_owned())
        .collect()
}

#[test]
fn dependencies_are_within_the_allowlist() {
    let manifest = read(&kernel_dir().join("Cargo.toml"));
    let dependencies = dependencies_in(&manifest, "dependencies");
    assert!(!dependencies.is_empty(), "found no [dependencies] in the kernel's Cargo.toml; did its layout change?");
    let unexpected: Vec<&String> =
        dependencies.iter().filter(|name| !DEPENDENCIES_ALLOWED.contains(&name.as_str())).collect();
    assert!(
        unexpected.is_empty(),
        "the kernel may depend only on {DEPENDENCIES_ALLOWED:?}; it also depends on {unexpected:?}. The kernel is \
         deterministic and performs no I/O (ARCHITECTURE.md): put effectful code in keel-node."
    );
    for forbidden in DEPENDENCIES_FORBIDDEN {
        assert!(!dependencies.contains(*forbidden), "the kernel must not depend on {forbidden}");
    }
}

#[test]
fn no_build_script_or_platform_specific_dependencies() {
    let manifest = read(&kernel_dir().join("Cargo.toml"));
    for section in sections_in(&manifest) {
        let is_allowed = ["package", "dependencies", "dev-dependencies", "lints", "features"]
            .contains(&section.as_str())
            || section.starts_with("dependencies.")
            || section.starts_with("dev-dependencies.");
        assert!(is_allowed, "unexpected section [{section}] in the kernel's Cargo.toml");
    }
    assert!(!manifest.contains("build ="), "the kernel has no build script");
    assert!(!kernel_dir().join("build.rs").exists(), "the kernel has no build script");
}

#[test]
fn the_jsonschema_dependency_does_no_io() {
    // Default features would add HTTP (reqwest) and file resolution.
    let manifest = read(&kernel_dir().join("Cargo.toml"));
    let line = manifest.lines().map(str::trim).find(|line| line.starts_with("jsonschema"));
    let line = line.expect("the kernel depends on jsonschema");
    assert!(line.contains("default-features = false"), "{line}");
    assert!(!line.contains("features = ["), "no optional features: {line}");
    // Every build goes through the offline retriever with an explicit draft.
    let source = read(&kernel_dir().join("src").join("action_schema.rs"));
    let code = code_only(&source);
    for build in code.match_indices(".build(") {
        let statement_start = code[..build.0].rfind(';').unwrap_or(0);
        let statement = &code[statement_start..build.0];
        assert!(statement.contains(".offline()") && statement.contains(".with_draft("), "{statement}");
    }
    assert!(code.contains(".build("), "action_schema compiles schemas");
}

#[test]
fn the_signature_library_draws_no_randomness() {
    // Tests may enable ed25519-dalek's `rand_core` to generate keys; the
    // kernel itself only verifies, so its own dependency must not.
    let manifest = read(&kernel_dir().join("Cargo.toml"));
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" && line.starts_with("ed25519-dalek") {
            assert!(line.contains("default-features = false"), "{line}");
            assert!(!line.contains("rand_core"), "{line}");
        }
    }
}

#[test]
fn regorus_is_built_without_clock_randomness_or_io() {
    let workspace = read(&kernel_dir().join("../../Cargo.toml"));
    let line = workspace
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("regorus "))
        .expect("the workspace declares regorus");
    assert!(line.contains("default-features = false"), "{line}");
    for feature in [
        "\"std\"",
        "full-opa",
        "opa-no-std",
        "\"time\"",
        "\"uuid\"",
        "\"http\"",
        "opa-runtime",
        "\"rand\"",
        "allocator-memory-limits",
    ] {
        assert!(!line.contains(feature), "regorus feature {feature} would bring a clock, randomness or I/O: {line}");
    }
}

/// The code in `source` with comments, string literals and char literals
/// replaced by spaces (line structure kept, so positions still point at lines).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    code.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if chars[i] == 'r' && matches!(rest.get(1), Some('"' | '#')) && starts_raw_string(&chars, i) {
            // Raw string: r"...", r#"..."#, br#"..."#.
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                code.push(chars[i]);
                i += 1;
                continue;
            }
            let mut closing = vec!['"'];
            closing.extend(std::iter::repeat_n('#', hashes));
            code.push('r');
            i += 2 + hashes;
            code.push_str(&" ".repeat(1 + hashes));
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                code.push(blank(chars[i]));
                i += 1;
            }
            code.push_str(&" ".repeat(closing.len()));
            i += closing.len();
        } else if chars[i] == '"' {
            code.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    code.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    code.push(blank(chars[i]));
                    i += 1;
                }
            }
            code.push(' ');
            i += 1;
        } else if chars[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if rest.get(1) == Some(&'\\') {
                rest.iter().skip(2).position(|&c| c == '\'').map(|offset| offset + 2)
            } else if rest.get(2) == Some(&'\'') {
                Some(2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    code.push_str(&" ".repeat(end + 1));
                    i += end + 1;
                }
                None => {
                    code.push('\'');
                    i += 1;
                }
            }
        } else {
            code.push(chars[i]);
            i += 1;
        }
    }
    code
}

/// Whether the `r` at `i` opens a raw string rather than ending an identifier.
fn starts_raw_string(chars: &[char], i: usize) -> bool {
    let before = |back: usize| i.checked_sub(back).and_then(|index| chars.get(index));
    !is_ident(before(1)) || (before(1) == Some(&'b') && !is_ident(before(2)))
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Lines (1-based) where `token` occurs in `code` as a whole token: not
/// preceded or followed by identifier characters where the token itself
/// starts or ends with one (so `f64` does not match `buf64`).
fn token_lines(code: &str, token: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let needle: Vec<char> = token.chars().collect();
        let found = (0..chars.len()).any(|start| {
            chars[start..].starts_with(&needle)
                && !(is_ident(needle.first()) && is_ident(start.checked_sub(1).and_then(|before| chars.get(before))))
                && !(is_ident(needle.last()) && is_ident(chars.get(start + needle.len())))
        });
        if found {
            lines.push(number + 1);
        }
    }
    lines
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_source_names_no_clock_randomness_io_or_hash_map() {
    let files = rust_files(&kernel_dir().join("src"));
    assert!(files.len() >= 10, "found only {files:?}; did the kernel's layout change?");
    let mut findings = Vec::new();
    for file in &files {
        let code = code_only(&read(file));
        let relative = file.strip_prefix(kernel_dir().join("src")).expect("under src").to_string_lossy().into_owned();
        for (token, why) in TOKENS_FORBIDDEN {
            if TOKENS_ALLOWED_IN
                .iter()
                .any(|(allowed_file, allowed_token, _)| *allowed_file == relative && allowed_token == token)
            {
                continue;
            }
            for line in token_lines(&code, token) {
                findings.push(format!("{}:{line}: `{token}` ({why})", file.display()));
            }
        }
    }
    assert!(findings.is_empty(), "the kernel must stay pure:\n{}", findings.join("\n"));
}

#[test]
fn the_crate_forbids_unsafe_code_and_requires_docs() {
    let lib = read(&kernel_dir().join("src/lib.rs"));
    assert!(lib.contains("#![forbid(unsafe_code)]"));
    assert!(lib.contains("#![deny(missing_docs)]"));
}

#[test]
fn clippy_disallows_clocks_and_hash_maps() {
    let clippy = read(&kernel_dir().join("clippy.toml"));
    for path in [
        "std::time::SystemTime::now",
        "std::time::Instant::now",
        "std::collections::HashMap",
        "std::collections::HashSet",
    ] {
        assert!(clippy.contains(&format!("\"{path}\"")), "clippy.toml no longer disallows {path}");
    }
}

#[test]
fn the_scanner_ignores_comments_and_strings_only() {
    let source = r##"
        // HashMap in a line comment
        /* SystemTime in a /* nested */ block comment */
        /// std::fs in a doc comment
        let text = "tokio in a string, with an escaped \" quote and HashSet";
        let raw = r#"std::env in a raw "string""#;
        let quote = '"'; let escaped = '\''; fn lifetime<'a>(x: &'a str) {}
        let bytes = b"thread_rng"; let raw_bytes = br#"rand:: "getrandom""#;
        let real = HashMap::new();
        let buf64 = 1; let float: f64 = 1.0;
    "##;
    let code = code_only(source);
    assert_eq!(code.lines().count(), source.lines().count(), "lines are kept");
    assert_eq!(token_lines(&code, "HashMap"), vec![9]);
    assert_eq!(token_lines(&code, "f64"), vec![10]);
    for token in ["SystemTime", "std::fs", "tokio", "HashSet", "std::env", "thread_rng", "rand::", "getrandom"] {
        assert_eq!(token_lines(&code, token), Vec::<usize>::new(), "{token}");
    }
    assert!(code.contains("fn lifetime<'a>(x: &'a str)"), "lifetimes are code: {code}");
}
