//! One policy's executable form: Rego source compiled by regorus into an RVM
//! program, and the checks that make a decision out of its result.
//!
//! ```text
//!  source ─scan─► no forbidden builtin ─Engine::add_policy─► package keel.policy, rule `decision`
//!         ─compile_with_entrypoint─► RVM compiler ─► Program (every builtin resolved)
//!  Program + input ─RegoVM, ≤ POLICY_EVAL_INSTRUCTIONS_MAX instructions─► value ─schema─► Decision
//! ```
//!
//! Why regorus's virtual machine rather than its tree-walking interpreter:
//! the VM counts instructions and stops at a fixed budget, so a pathological
//! policy fails the same way at the same point on every node; the
//! interpreter's only bound is wall-clock time, which `apply` cannot use.
//!
//! Determinism: regorus is built without its `std`, `time`, `uuid`, `http` and
//! `opa-runtime` features, so `time.now_ns`, `rand.intn`, `uuid.rfc4122`,
//! `http.send` and `opa.runtime` are not linked at all and the RVM compiler
//! refuses a call to any of them. A scan of the source (and of the compiled
//! program's builtin table, in case a feature ever slips in) names the
//! builtin in a [`Rejection::PolicyBuiltinForbidden`] instead.

use crate::limits::{Limit, POLICY_EVAL_INSTRUCTIONS_MAX, POLICY_MESSAGE_BYTES_MAX};
use crate::rejection::Rejection;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use std::sync::Arc;

/// The package every policy declares.
pub const POLICY_PACKAGE: &str = "data.keel.policy";
/// The rule evaluated for a decision.
pub const DECISION_RULE: &str = "decision";
/// The full path of the decision rule.
pub const DECISION_RULE_PATH: &str = "data.keel.policy.decision";
/// The file name regorus reports in messages.
const POLICY_FILE_NAME: &str = "policy.rego";

/// Builtins a replicated policy may not call: those that read the clock,
/// draw randomness, do I/O or describe the host, and those whose allocation
/// one instruction cannot bound. A reference to any of these paths (or below
/// a namespace ending in `.`) refuses the policy.
pub const BUILTINS_FORBIDDEN: &[&str] = &[
    "time.",
    "rand.",
    "uuid.",
    "http.",
    "net.lookup_ip_addr",
    "opa.runtime",
    // These two check token and certificate expiry against the clock.
    "io.jwt.decode_verify",
    "crypto.x509.parse_and_verify_certificates",
    // Deterministic, but these allocate as many elements as their arguments
    // say in one instruction, which the instruction budget cannot stop: one
    // `numbers.range(0, 1e12)` would abort every node applying the put.
    "numbers.range",
    "numbers.range_step",
];

/// A compiled policy, ready to evaluate. Cheap to clone (shared program).
#[derive(Debug, Clone)]
pub struct PolicyProgram {
    program: Arc<Program>,
}

/// A decision as the policy returned it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// Whether the call may run.
    pub allow: bool,
    /// Why, for humans and audit records.
    pub reason: String,
    /// Limits the policy sets on allowed calls.
    pub limits: Option<DecisionLimits>,
    /// Whether the call may run degraded: admitted even while an engine it
    /// depends on has an open circuit breaker.
    #[serde(default)]
    pub allow_degraded: bool,
}

/// Limits a decision sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecisionLimits {
    /// Sustained rate.
    pub calls_per_minute: u64,
    /// Calls allowed above the sustained rate at once.
    pub burst: u64,
    /// Longest a call may run.
    pub max_duration_ms: u64,
}

/// Why one evaluation produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EvaluationError {
    /// The VM stopped: a runtime error or the instruction budget.
    #[error("{detail}")]
    Failed {
        /// The VM's message, truncated to `POLICY_MESSAGE_BYTES_MAX`.
        detail: String,
    },
    /// The result is not a decision.
    #[error("{detail}")]
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
}

impl PolicyProgram {
    /// Compiles `source`: it must parse, declare `package keel.policy`,
    /// define a `decision` rule and call only deterministic builtins.
    pub fn compile(source: &str) -> Result<PolicyProgram, Rejection> {
        let code = code_only(source);
        Limit::PolicyNestingDepth.check(nesting_depth(&code))?;
        if let Some(builtin) = forbidden_reference(&code) {
            return Err(Rejection::PolicyBuiltinForbidden { builtin });
        }
        let mut engine = regorus::Engine::new();
        let package = engine.add_policy(POLICY_FILE_NAME.to_owned(), source.to_owned()).map_err(compile_failed)?;
        if package != POLICY_PACKAGE {
            return Err(Rejection::PolicyCompileFailed {
                detail: format!("the policy must declare `package keel.policy`, not {package}"),
            });
        }
        if !engine.has_declared_rule_rooted_at(POLICY_FILE_NAME, DECISION_RULE).map_err(compile_failed)? {
            return Err(Rejection::PolicyCompileFailed { detail: "the policy defines no `decision` rule".to_owned() });
        }
        let entry_point: regorus::Rc<str> = regorus::Rc::from(DECISION_RULE_PATH);
        let compiled = engine.compile_with_entrypoint(&entry_point).map_err(compile_failed)?;
        let program = Compiler::compile_from_policy(&compiled, &[DECISION_RULE_PATH]).map_err(compile_failed)?;
        if let Some(builtin) = program.builtin_info_table.iter().find(|info| is_forbidden(&info.name)) {
            return Err(Rejection::PolicyBuiltinForbidden { builtin: builtin.name.clone() });
        }
        Ok(PolicyProgram { program })
    }

    /// Runs the decision rule on `input` (a JSON document) within the
    /// instruction budget. `Ok(None)` is an undefined decision.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Option<Decision>, EvaluationError> {
        let failed = |detail: String| EvaluationError::Failed { detail: truncate(detail) };
        let mut vm = RegoVM::new();
        vm.set_max_instructions(POLICY_EVAL_INSTRUCTIONS_MAX);
        vm.set_data(regorus::Value::new_object()).map_err(|error| failed(error.to_string()))?;
        vm.set_input(regorus::Value::from(input.clone()));
        vm.load_program(self.program.clone());
        let value = vm.execute_entry_point_by_name(DECISION_RULE_PATH).map_err(|error| failed(error.to_string()))?;
        if value == regorus::Value::Undefined {
            return Ok(None);
        }
        let json = value.to_json_str().map_err(|error| failed(message(&error)))?;
        let json: serde_json::Value =
            serde_json::from_str(&json).map_err(|error| EvaluationError::Malformed { detail: error.to_string() })?;
        parse_decision(&json).map(Some).map_err(|detail| EvaluationError::Malformed { detail })
    }
}

/// Checks a result against the decision schema: an object with exactly
/// `allow` (bool), `reason` (string), optionally `allow_degraded` (bool)
/// and optionally `limits` (an object with
/// exactly `calls_per_minute`, `burst` and `max_duration_ms`, integers ≥ 0).
pub fn parse_decision(value: &serde_json::Value) -> Result<Decision, String> {
    let object = value.as_object().ok_or_else(|| format!("the decision must be an object, not {}", kind(value)))?;
    if let Some(key) =
        object.keys().find(|key| !["allow", "reason", "limits", "allow_degraded"].contains(&key.as_str()))
    {
        return Err(format!("unexpected key {key:?} (allowed: allow, reason, limits, allow_degraded)"));
    }
    let allow_degraded = match object.get("allow_degraded") {
        None => false,
        Some(serde_json::Value::Bool(allow_degraded)) => *allow_degraded,
        Some(other) => return Err(format!("allow_degraded must be a bool, not {}", kind(other))),
    };
    let allow = match object.get("allow") {
        Some(serde_json::Value::Bool(allow)) => *allow,
        Some(other) => return Err(format!("allow must be a boolean, not {}", kind(other))),
        None => return Err("allow is missing".to_owned()),
    };
    let reason = match object.get("reason") {
        Some(serde_json::Value::String(reason)) => reason.clone(),
        Some(other) => return Err(format!("reason must be a string, not {}", kind(other))),
        None => return Err("reason is missing".to_owned()),
    };
    if reason.len() > POLICY_MESSAGE_BYTES_MAX {
        return Err(format!(
            "reason is {} bytes, over POLICY_MESSAGE_BYTES_MAX ({POLICY_MESSAGE_BYTES_MAX})",
            reason.len()
        ));
    }
    let limits = match object.get("limits") {
        None => None,
        Some(serde_json::Value::Object(limits)) => {
            let names = ["calls_per_minute", "burst", "max_duration_ms"];
            if let Some(key) = limits.keys().find(|key| !names.contains(&key.as_str())) {
                return Err(format!("unexpected key {key:?} in limits (allowed: {})", names.join(", ")));
            }
            let field = |name: &str| -> Result<u64, String> {
                match limits.get(name) {
                    Some(serde_json::Value::Number(number)) => {
                        number.as_u64().ok_or_else(|| format!("limits.{name} must be an integer >= 0, not {number}"))
                    }
                    Some(other) => Err(format!("limits.{name} must be an integer >= 0, not {}", kind(other))),
                    None => Err(format!("limits.{name} is missing")),
                }
            };
            Some(DecisionLimits {
                calls_per_minute: field("calls_per_minute")?,
                burst: field("burst")?,
                max_duration_ms: field("max_duration_ms")?,
            })
        }
        Some(other) => return Err(format!("limits must be an object, not {}", kind(other))),
    };
    Ok(Decision { allow, reason, limits, allow_degraded })
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An error's message with its causes (`{:#}` prints anyhow's chain),
/// truncated to `POLICY_MESSAGE_BYTES_MAX`.
fn message(error: &impl std::fmt::Display) -> String {
    truncate(format!("{error:#}"))
}

fn compile_failed(error: impl std::fmt::Display) -> Rejection {
    Rejection::PolicyCompileFailed { detail: message(&error) }
}

/// Cuts `text` to at most `POLICY_MESSAGE_BYTES_MAX` bytes on a character boundary.
pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > POLICY_MESSAGE_BYTES_MAX {
        let mut end = POLICY_MESSAGE_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn is_forbidden(path: &str) -> bool {
    BUILTINS_FORBIDDEN.iter().any(|forbidden| match forbidden.strip_suffix('.') {
        Some(namespace) => path.strip_prefix(namespace).is_some_and(|rest| rest.starts_with('.')),
        None => path == *forbidden,
    })
}

/// `source` with comments and string literals blanked out (replaced by
/// spaces), so scans see only code.
fn code_only(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut code = chars.clone();
    let mut i = 0;
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for c in code.iter_mut().take(to.min(chars.len())).skip(from) {
            *c = ' ';
        }
    };
    while i < chars.len() {
        let start = i;
        match chars[i] {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '`' => {
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                i += 1;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        blank(&mut code, start, i);
    }
    code
}

/// The deepest nesting of `[` and `{` in the code. regorus's parser
/// backtracks on array and object literals, so its time doubles with each
/// level; `POLICY_NESTING_DEPTH_MAX` keeps a put's parse short.
fn nesting_depth(code: &[char]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in code {
        match c {
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The first dotted reference in the code that names a forbidden builtin.
fn forbidden_reference(code: &[char]) -> Option<String> {
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < code.len() && (code[i].is_ascii_alphanumeric() || code[i] == '_' || code[i] == '.') {
                i += 1;
            }
            // A path after `.` continues an expression (`input.x.time.now`), not a builtin.
            if start > 0 && code[start - 1] == '.' {
                continue;
            }
            let path: String = code[start..i].iter().collect();
            let path = path.trim_end_matches('.');
            // Every prefix of a dotted path: `time.now_ns.x` still names `time.now_ns`.
            let ends = path.match_indices('.').map(|(index, _)| index).chain(std::iter::once(path.len()));
            for end in ends {
                if is_forbidden(&path[..end]) {
                    return Some(path[..end].to_owned());
                }
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_forbidden_builtins_outside_comments_and_strings() {
        let cases: &[(&str, Option<&str>)] = &[
            ("x := time.now_ns()", Some("time.now_ns")),
            ("x := rand.intn(\"a\", 3)", Some("rand.intn")),
            ("x := uuid.rfc4122(\"k\")", Some("uuid.rfc4122")),
            ("r := http.send({})", Some("http.send")),
            ("r := opa.runtime()", Some("opa.runtime")),
            ("r := io.jwt.decode_verify(t, {})", Some("io.jwt.decode_verify")),
            ("# time.now_ns() in a comment\nx := 1", None),
            ("x := \"time.now_ns()\"", None),
            ("x := `rand.intn`", None),
            ("x := input.time.now", None),
            ("timeout := 1", None),
            ("x := my_time.now_ns", None),
            ("x := io.jwt.decode(t)", None),
            ("xs := numbers.range(0, 1000000000000)", Some("numbers.range")),
            ("xs := numbers.range_step(0, 10, 2)", Some("numbers.range_step")),
            ("x := input[\"a\"].time.now_ns", None),
        ];
        for (source, expected) in cases {
            assert_eq!(forbidden_reference(&code_only(source)).as_deref(), *expected, "{source}");
        }
    }

    #[test]
    fn nesting_counts_brackets_and_braces_in_code_only() {
        let cases: &[(&str, usize)] = &[
            ("x := 1", 0),
            ("x := [[1], {\"a\": [2]}]", 3),
            ("x := \"[[[[[[[[\" # {{{{{{{{", 0),
            ("x := `{{{{` ; y := ((((1))))", 0),
            ("decision := {\"a\": 1} if { x := [y | some y in [1]] }", 3),
        ];
        for (source, expected) in cases {
            assert_eq!(nesting_depth(&code_only(source)), *expected, "{source}");
        }
    }
}
