//! Judgements: every call into a third-party evaluator (regorus for
//! policies, `jsonschema` for action schemas) that `apply` depends on,
//! expressed as data so the node can run it where a panic, a runaway
//! allocation or a hang cannot hurt the member.
//!
//! ```text
//!  apply ─► Policies::put / Registry::publish ─► Judgement ─► &dyn Judge ─► Verdict
//!                                                               │
//!               kernel tests: InProcessJudge (catch_unwind) ────┤
//!               keeld: a fresh child process per judgement ─────┘
//!                      (memory budget, fixed stack, timeout; see keel-node `judge`)
//! ```
//!
//! A judgement is a pure function of its request: the same request gives
//! the same verdict on every member running the same evaluator versions.
//! Those versions are part of the replication protocol: they are pinned
//! exactly in the workspace manifest and named by [`SEMANTICS_VERSION`],
//! which the leader stamps on every entry; a member whose build judges under
//! other semantics refuses to apply an entry that needs judging (a fatal
//! stop, never a divergent verdict).
//!
//! Verdicts are *total*: a panic inside an evaluator is caught and becomes a
//! [`Rejection::EvaluationAborted`], as does exceeding the deterministic
//! memory budget when the node runs the judgement in its sandbox. Nothing is
//! stored before the verdict is known, so a refused judgement changes nothing.

use crate::action_schema::{self, SchemaRole};
use crate::policy::{self, Decision, EvaluationError, PolicyProgram};
use crate::rejection::Rejection;
use serde::{Deserialize, Serialize};

/// The evaluation semantics this build judges under: bump it whenever the
/// pinned `regorus` or `jsonschema` version, or any check in this module,
/// changes what a judgement answers. Members refuse entries stamped with
/// other semantics instead of judging them differently.
///
/// 1: regorus 0.14.1 (RVM, no std), jsonschema 0.61.2, judged in a child
/// process with `EVALUATION_MEMORY_BYTES_MAX` and `EVALUATION_STACK_BYTES` of stack.
/// 2: decisions may carry `allow_degraded` (a bool), which 1 rejected.
pub const SEMANTICS_VERSION: u32 = 2;

/// One evaluation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Judgement {
    /// Would `source` be accepted as a policy version: compile, then every
    /// probe input gives undefined or a well-formed decision.
    PolicyPut {
        /// Rego source.
        source: String,
    },
    /// Compile `source` (with the put's probes when `with_probes`), then
    /// evaluate it on each input. Used by `Evaluate` and `Test`.
    PolicyDecide {
        /// Rego source.
        source: String,
        /// Input documents.
        inputs: Vec<serde_json::Value>,
        /// Run a put's checks first (a `Test` candidate).
        with_probes: bool,
    },
    /// Are these action schemas usable JSON Schemas.
    ActionSchemas {
        /// Every object schema of one manifest, in manifest order.
        schemas: Vec<ActionSchema>,
    },
    /// Is `input` valid against the action's input schema (admission; never
    /// judged in `apply`).
    ActionInput {
        /// The action's name.
        action: String,
        /// Its input schema.
        schema: serde_json::Value,
        /// The call's input.
        input: serde_json::Value,
    },
}

/// One action schema to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSchema {
    /// The action's name.
    pub action: String,
    /// `true` for `input_schema`, `false` for `output_schema`.
    pub is_input: bool,
    /// The schema.
    pub schema: serde_json::Value,
}

/// What a judgement answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Accepted (`PolicyPut`, `ActionSchemas`).
    Accepted,
    /// One result per input (`PolicyDecide`).
    Decisions(Vec<Result<Option<Decision>, EvaluationError>>),
    /// Refused, deterministically.
    Rejected(Rejection),
    /// The judge could not answer (its process could not start, was killed,
    /// timed out). Not a verdict about the request: an `apply` that meets it
    /// must stop the member, never record it as an outcome.
    Unavailable {
        /// What went wrong, for the log.
        detail: String,
    },
}

/// Why an evaluation was aborted: the stable `failure` of
/// [`Rejection::EvaluationAborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// The evaluator panicked.
    Panic,
    /// The evaluation exceeded `EVALUATION_MEMORY_BYTES_MAX`.
    MemoryBudget,
    /// The evaluation exceeded its fixed stack.
    Stack,
    /// The evaluation process aborted for another deterministic reason.
    Abort,
}

impl AbortCause {
    /// The stable name reported in `EVALUATION_ABORTED`'s metadata.
    pub fn name(self) -> &'static str {
        match self {
            AbortCause::Panic => "panic",
            AbortCause::MemoryBudget => "memory_budget",
            AbortCause::Stack => "stack",
            AbortCause::Abort => "abort",
        }
    }
}

impl Judgement {
    /// Which evaluator this judgement runs (`policy` or `action_schema`).
    pub fn evaluator(&self) -> &'static str {
        match self {
            Judgement::PolicyPut { .. } | Judgement::PolicyDecide { .. } => "policy",
            Judgement::ActionSchemas { .. } | Judgement::ActionInput { .. } => "action_schema",
        }
    }

    /// The verdict for an evaluation that was aborted by `cause`.
    pub fn aborted(&self, cause: AbortCause, detail: &str) -> Verdict {
        Verdict::Rejected(Rejection::EvaluationAborted {
            evaluator: self.evaluator().into(),
            failure: cause.name().into(),
            detail: crate::policy::program::truncate(detail.to_owned()),
        })
    }
}

/// Where and when an entry applies: what store methods that judge need.
#[derive(Clone, Copy)]
pub(crate) struct Applying<'a> {
    /// The entry's revision (its Raft index).
    pub revision: u64,
    /// The entry's time (leader-stamped, never decreasing).
    pub at_ms: u64,
    /// Who judges third-party evaluations.
    pub judge: &'a dyn Judge,
}

/// Runs judgements. Implementations must answer the same verdict for the
/// same judgement every time, or [`Verdict::Unavailable`].
pub trait Judge {
    /// Judges one request.
    fn judge(&self, judgement: &Judgement) -> Verdict;
}

/// Judges in the calling thread, turning panics into verdicts. Total, but
/// it bounds memory only by what the evaluators bound themselves: the node
/// runs judgements in a child process instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcessJudge;

impl Judge for InProcessJudge {
    fn judge(&self, judgement: &Judgement) -> Verdict {
        run(judgement)
    }
}

/// Runs `judgement` here, catching panics (the body of every judge).
pub fn run(judgement: &Judgement) -> Verdict {
    match std::panic::catch_unwind(|| run_unguarded(judgement)) {
        Ok(verdict) => verdict,
        Err(payload) => judgement.aborted(AbortCause::Panic, &panic_message(payload.as_ref())),
    }
}

/// Compiled evaluators a long-lived judging worker keeps between
/// judgements (never `apply`'s judge, which compiles afresh): policies by
/// source, input schemas by action and schema. Evaluation is deterministic,
/// so a cached compilation answers exactly as a fresh one. At most
/// [`COMPILED_ENTRIES_MAX`] of each; when full, the kind is emptied.
#[derive(Debug, Default)]
pub struct Compiled {
    policies: std::collections::BTreeMap<String, PolicyProgram>,
    schemas: std::collections::BTreeMap<(String, String), std::sync::Arc<action_schema::InputValidator>>,
}

/// Compiled policies (and, apart, input schemas) a [`Compiled`] keeps.
pub const COMPILED_ENTRIES_MAX: usize = 64;

/// [`run`] with compiled evaluators reused from (and added to) `compiled`.
/// A panic empties `compiled` (a half-built entry is never kept).
pub fn run_cached(judgement: &Judgement, compiled: &mut Compiled) -> Verdict {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_with(judgement, &mut *compiled)));
    match result {
        Ok(verdict) => verdict,
        Err(payload) => {
            *compiled = Compiled::default();
            judgement.aborted(AbortCause::Panic, &panic_message(payload.as_ref()))
        }
    }
}

fn run_with(judgement: &Judgement, compiled: &mut Compiled) -> Verdict {
    match judgement {
        Judgement::PolicyDecide { source, inputs, with_probes: false } => {
            let program = match compiled.policies.get(source) {
                Some(program) => program.clone(),
                None => match PolicyProgram::compile(source) {
                    Ok(program) => {
                        if compiled.policies.len() >= COMPILED_ENTRIES_MAX {
                            compiled.policies.clear();
                        }
                        compiled.policies.insert(source.clone(), program.clone());
                        program
                    }
                    Err(rejection) => return Verdict::Rejected(rejection),
                },
            };
            Verdict::Decisions(inputs.iter().map(|input| program.evaluate(input)).collect())
        }
        Judgement::ActionInput { action, schema, input } => {
            let key = (action.clone(), schema.to_string());
            let validator = match compiled.schemas.get(&key) {
                Some(validator) => std::sync::Arc::clone(validator),
                None => match action_schema::InputValidator::compile(action, schema) {
                    Ok(validator) => {
                        let validator = std::sync::Arc::new(validator);
                        if compiled.schemas.len() >= COMPILED_ENTRIES_MAX {
                            compiled.schemas.clear();
                        }
                        compiled.schemas.insert(key, std::sync::Arc::clone(&validator));
                        validator
                    }
                    Err(rejection) => return Verdict::Rejected(rejection),
                },
            };
            match validator.validate(input) {
                Ok(()) => Verdict::Accepted,
                Err(rejection) => Verdict::Rejected(rejection),
            }
        }
        other => run_unguarded(other),
    }
}

fn run_unguarded(judgement: &Judgement) -> Verdict {
    match judgement {
        Judgement::PolicyPut { source } => match policy::check_program(source) {
            Ok(_) => Verdict::Accepted,
            Err(rejection) => Verdict::Rejected(rejection),
        },
        Judgement::PolicyDecide { source, inputs, with_probes } => {
            let program = if *with_probes { policy::check_program(source) } else { PolicyProgram::compile(source) };
            match program {
                Ok(program) => Verdict::Decisions(inputs.iter().map(|input| program.evaluate(input)).collect()),
                Err(rejection) => Verdict::Rejected(rejection),
            }
        }
        Judgement::ActionSchemas { schemas } => {
            for schema in schemas {
                let role = if schema.is_input { SchemaRole::Input } else { SchemaRole::Output };
                if let Err(rejection) = action_schema::check(&schema.action, role, &schema.schema) {
                    return Verdict::Rejected(rejection);
                }
            }
            Verdict::Accepted
        }
        Judgement::ActionInput { action, schema, input } => {
            match action_schema::validate_input(action, schema, input) {
                Ok(()) => Verdict::Accepted,
                Err(rejection) => Verdict::Rejected(rejection),
            }
        }
    }
}

/// A panic payload's message (`&str` or `String` payloads; others have none).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// The verdict of an accept-or-reject judgement as a result: `Accepted` is
/// `Ok`, anything else a rejection (`Unavailable` included: the caller's
/// judge records it, and the node stops before the outcome is used).
pub fn accepted(judge: &dyn Judge, judgement: &Judgement) -> Result<(), Rejection> {
    match judge.judge(judgement) {
        Verdict::Accepted => Ok(()),
        Verdict::Rejected(rejection) => Err(rejection),
        Verdict::Decisions(_) => Err(Rejection::EvaluationAborted {
            evaluator: judgement.evaluator().into(),
            failure: AbortCause::Abort.name().into(),
            detail: "the judge answered decisions to a yes-or-no judgement".to_owned(),
        }),
        Verdict::Unavailable { detail } => Err(Rejection::EvaluationAborted {
            evaluator: judgement.evaluator().into(),
            failure: "unavailable".into(),
            detail,
        }),
    }
}

/// The judgements `command` may ask for when applied, so a node can run
/// them before it takes its state lock. A superset is harmless (a verdict
/// nobody asks for is dropped); a judgement missing here is run when asked.
pub fn judgements_of(command: &crate::Command) -> Vec<Judgement> {
    match command {
        crate::Command::PutPolicy { source, .. } => vec![Judgement::PolicyPut { source: source.clone() }],
        crate::Command::PublishEngineVersion { manifest, .. } => match crate::manifest::parse(manifest) {
            Ok(parsed) => crate::manifest::schema_judgement(&parsed.manifest).into_iter().collect(),
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Whether applying `command` may need a judgement (and so depends on the
/// evaluation semantics).
pub fn needs_judgement(command: &crate::Command) -> bool {
    matches!(command, crate::Command::PutPolicy { .. } | crate::Command::PublishEngineVersion { .. })
}
