//! Action schemas: each `input_schema`/`output_schema` of a manifest must be
//! a JSON Schema, checked at publish against its draft's meta-schema and
//! compiled once, so an engine can never be published with a schema that no
//! validator could use.
//!
//! ```text
//!  schema ─ boolean? ──────────────────────────────────────────────▶ ok
//!         ─ object? ─ $schema absent → draft 2020-12
//!                     $schema names a supported draft → that draft
//!                     anything else → ACTION_SCHEMA_INVALID
//!           ─ meta-schema (bundled) ─ every violation, least instance path reported
//!           ─ compile offline ─ bad regex, $ref that would need I/O → ACTION_SCHEMA_INVALID
//! ```
//!
//! Purity: the `jsonschema` crate is used without default features (no HTTP
//! or file resolution) and with its offline retriever, which answers every
//! reference that is not bundled with an error — even if another crate in a
//! build turns the crate's I/O features on, this module never reaches them:
//! `$schema` is checked against [`SUPPORTED_DRAFTS`] before the crate sees
//! it, and the draft is always given explicitly. The crate's internal hash
//! maps are seeded randomly (ahash), which never changes a verdict (validity
//! is a boolean over the whole schema); the reported problem is the least
//! (instance path, message) pair among *all* meta-schema violations, so it
//! does not depend on the order in which they were found.

use crate::rejection::Rejection;
use jsonschema::Draft;
use serde_json::Value;

/// Bytes of the problem description kept in a rejection.
pub const PROBLEM_BYTES_MAX: usize = 512;

/// The `$schema` values an action schema may carry, and their drafts. Both
/// spellings (with and without the empty fragment) are accepted.
pub const SUPPORTED_DRAFTS: [(&str, Draft); 5] = [
    ("https://json-schema.org/draft/2020-12/schema", Draft::Draft202012),
    ("https://json-schema.org/draft/2019-09/schema", Draft::Draft201909),
    ("http://json-schema.org/draft-07/schema", Draft::Draft7),
    ("http://json-schema.org/draft-06/schema", Draft::Draft6),
    ("http://json-schema.org/draft-04/schema", Draft::Draft4),
];

/// Which of an action's schemas is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaRole {
    /// `input_schema`.
    Input,
    /// `output_schema`.
    Output,
}

impl SchemaRole {
    /// The manifest key.
    pub fn field(self) -> &'static str {
        match self {
            SchemaRole::Input => "input_schema",
            SchemaRole::Output => "output_schema",
        }
    }
}

/// Checks that `schema` is a usable JSON Schema; `action` and `role` name it
/// in the rejection.
pub fn check(action: &str, role: SchemaRole, schema: &Value) -> Result<(), Rejection> {
    let invalid = |problem: String| Rejection::ActionSchemaInvalid {
        action: action.to_owned(),
        schema: role.field().into(),
        problem: truncate(problem),
    };
    let object = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(object) => object,
        _ => return Err(invalid("a JSON Schema is an object or a boolean".to_owned())),
    };
    let draft = match object.get("$schema") {
        None => Draft::Draft202012,
        Some(Value::String(uri)) => draft_named(uri).ok_or_else(|| {
            invalid(format!("$schema {uri:?} names no supported draft (2020-12, 2019-09, 7, 6 or 4)"))
        })?,
        Some(_) => return Err(invalid("$schema must be a string".to_owned())),
    };
    if let Some(problem) = least_meta_violation(schema) {
        return Err(invalid(problem));
    }
    // The meta-schema holds; compiling finds what it cannot see: patterns
    // that are not regular expressions, references that cannot be resolved
    // without I/O.
    jsonschema::options()
        .with_draft(draft)
        .offline()
        .build(schema)
        .map(drop)
        .map_err(|error| invalid(error.to_string()))
}

/// Checks `input` against the action's input `schema` (which passed
/// [`check`] at publish): the least violation by instance path, or `Ok`.
pub fn validate_input(action: &str, schema: &Value, input: &Value) -> Result<(), Rejection> {
    InputValidator::compile(action, schema)?.validate(input)
}

/// An action's input schema, compiled once (a judging worker keeps these).
pub struct InputValidator {
    action: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for InputValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputValidator").field("action", &self.action).finish_non_exhaustive()
    }
}

impl InputValidator {
    /// Compiles the action's input `schema` (which passed [`check`] at publish).
    pub fn compile(action: &str, schema: &Value) -> Result<InputValidator, Rejection> {
        let draft = match schema.get("$schema") {
            Some(Value::String(uri)) => draft_named(uri).unwrap_or(Draft::Draft202012),
            _ => Draft::Draft202012,
        };
        let validator = jsonschema::options().with_draft(draft).offline().build(schema).map_err(|error| {
            Rejection::InputInvalid {
                action: action.to_owned(),
                problem: truncate(format!("the action's input schema does not compile: {error}")),
            }
        })?;
        Ok(InputValidator { action: action.to_owned(), validator })
    }

    /// The least violation of `input` by instance path, or `Ok`.
    pub fn validate(&self, input: &Value) -> Result<(), Rejection> {
        let least = self
            .validator
            .iter_errors(input)
            .map(|error| (error.instance_path().to_string(), error.to_string()))
            .min()
            .map(|(path, message)| if path.is_empty() { message } else { format!("at {path}: {message}") });
        match least {
            Some(problem) => Err(Rejection::InputInvalid { action: self.action.clone(), problem: truncate(problem) }),
            None => Ok(()),
        }
    }
}

/// The draft a `$schema` value names, if it is supported.
fn draft_named(uri: &str) -> Option<Draft> {
    let uri = uri.strip_suffix('#').unwrap_or(uri);
    SUPPORTED_DRAFTS.iter().find(|(name, _)| *name == uri).map(|(_, draft)| *draft)
}

/// The least (instance path, message) among every violation of the
/// meta-schema of the schema's draft, or `None` when the schema conforms.
///
/// `meta::validator_for` picks the draft from `$schema` (or 2020-12 without
/// one) and hands out a cached validator of a bundled meta-schema. It is
/// called only after [`draft_named`] accepted `$schema`, so it never meets a
/// meta-schema it would have to fetch (a unit test checks that every
/// supported spelling is detected as its draft).
fn least_meta_violation(schema: &Value) -> Option<String> {
    let meta = match jsonschema::meta::validator_for(schema) {
        Ok(meta) => meta,
        Err(error) => return Some(format!("its meta-schema is not available: {error}")),
    };
    meta.iter_errors(schema)
        .map(|error| (error.instance_path().to_string(), error.to_string()))
        .min()
        .map(|(path, message)| if path.is_empty() { message } else { format!("at {path}: {message}") })
}

/// `problem` cut to [`PROBLEM_BYTES_MAX`] bytes on a character boundary.
fn truncate(mut problem: String) -> String {
    if problem.len() > PROBLEM_BYTES_MAX {
        let mut end = PROBLEM_BYTES_MAX;
        while !problem.is_char_boundary(end) {
            end -= 1;
        }
        problem.truncate(end);
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_supported_spelling_is_detected_as_its_draft() {
        for (uri, draft) in SUPPORTED_DRAFTS {
            for spelling in [uri.to_owned(), format!("{uri}#")] {
                let detected = Draft::default().detect(&json!({ "$schema": spelling }));
                assert_eq!(detected, draft, "{spelling}");
            }
        }
        assert_eq!(Draft::default().detect(&json!({"type": "object"})), Draft::Draft202012);
    }

    #[test]
    fn valid_schemas_of_every_draft_pass() {
        for (uri, _) in SUPPORTED_DRAFTS {
            let schema = json!({"$schema": uri, "type": "object", "properties": {"n": {"type": "integer"}}});
            assert_eq!(check("run", SchemaRole::Input, &schema), Ok(()), "{uri}");
        }
        assert_eq!(check("run", SchemaRole::Output, &json!(true)), Ok(()));
        assert_eq!(check("run", SchemaRole::Output, &json!({})), Ok(()));
    }

    fn problem_of(schema: Value) -> String {
        match check("run", SchemaRole::Input, &schema) {
            Err(Rejection::ActionSchemaInvalid { action, schema, problem }) => {
                assert_eq!((action.as_str(), schema.as_ref()), ("run", "input_schema"));
                problem
            }
            other => panic!("expected ACTION_SCHEMA_INVALID, got {other:?}"),
        }
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_problem() {
        problem_of(json!({"type": "no-such-type"}));
        problem_of(json!({"type": "object", "properties": {"n": {"minimum": "zero"}}}));
        problem_of(json!({"type": "string", "pattern": "("}));
        problem_of(json!({"$schema": "https://example.com/my-meta"}));
        problem_of(json!({"$schema": 7}));
        problem_of(json!([1, 2]));
        problem_of(json!("string"));
    }

    #[test]
    fn references_that_need_io_are_refused() {
        problem_of(json!({"$ref": "https://example.com/schema.json"}));
        problem_of(json!({"$ref": "file:///etc/passwd"}));
        problem_of(json!({"$id": "https://example.com/a.json", "$ref": "b.json"}));
    }

    #[test]
    fn local_references_resolve() {
        let schema = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}});
        assert_eq!(check("run", SchemaRole::Input, &schema), Ok(()));
    }

    #[test]
    fn the_reported_problem_is_the_least_violation() {
        let schema = json!({"properties": {"b": {"type": 1}, "a": {"type": 2}}});
        let problem = problem_of(schema);
        assert!(problem.contains("/properties/a"), "{problem}");
    }

    #[test]
    fn recursive_and_odd_schemas_are_judged_without_panicking() {
        let accepted = [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"$dynamicAnchor": "node", "items": {"$dynamicRef": "#node"}}),
            json!({"$ref": "https://json-schema.org/draft/2020-12/schema"}),
            json!({"pattern": "^(a+)+$"}),
        ];
        for schema in accepted {
            assert_eq!(check("run", SchemaRole::Input, &schema), Ok(()), "{schema}");
        }
        for schema in [
            json!({"$ref": "#/$defs/missing"}),
            json!({"$ref": "#/definitions/%ZZ"}),
            json!({"$id": "not a uri with spaces", "type": "object"}),
            json!({"properties": {"a": {"$schema": "https://example.com/nested-meta"}}}),
            json!({"$anchor": 5}),
        ] {
            // Refused or accepted, but never a panic or a fetch.
            let _ = check("run", SchemaRole::Input, &schema);
        }
    }

    #[test]
    fn long_problems_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(PROBLEM_BYTES_MAX));
        assert!(cut.len() <= PROBLEM_BYTES_MAX && cut.chars().all(|c| c == 'é'));
    }
}
