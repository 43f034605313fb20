//! `keelctl policy`: put, read, list, evaluate and test Rego policies.
//!
//! `test` reads a JSON file of cases,
//! `[{"context": {"tenant", "engine", "action", "version"?, "role"?,
//! "risk_band"?, "region"?, "data_classes"?}, "expect": {"allow", "reason"?}}]`,
//! runs the candidate source against them on the server without storing it,
//! prints one row per case and exits 1 (`POLICY_TEST_FAILED`) when any case
//! failed.

use super::error::CliError;
use super::output::{Output, OutputFormat};
use super::table::Table;
use super::timestamp::format_rfc3339;
use super::{ConsistencyArg, GlobalArgs, connect};
use keel_client::limits::{POLICY_CASES_FILE_BYTES_MAX, POLICY_SOURCE_BYTES_MAX, POLICY_TEST_CASES_MAX};
use keel_client::local_error::LocalError;
use keel_client::local_file::read_bounded;
use keel_client::pb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `keelctl policy …`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Store the next version of a policy from a Rego file.
    Put {
        /// Policy name; `main` is the one admission asks.
        name: String,
        /// The Rego source file.
        #[arg(long)]
        file: PathBuf,
        /// Put only if the latest version is this one (0: the name is new).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Show one version of a policy (the latest by default), with its source.
    Get {
        /// Policy name.
        name: String,
        /// The version; the latest when absent.
        #[arg(long)]
        version: Option<u64>,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// List policies (latest versions).
    List {
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Ask a policy for a decision.
    Eval(EvalArgs),
    /// Run a candidate Rego file against a file of cases without storing it.
    Test {
        /// The candidate Rego source file.
        #[arg(long)]
        file: PathBuf,
        /// JSON file: `[{"context": {...}, "expect": {"allow": bool, "reason"?: string}}]`.
        #[arg(long)]
        cases: PathBuf,
        /// Read consistency of the facts the cases see.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
}

/// `keelctl policy eval` arguments: the evaluation context.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The policy to ask (default `main`).
    #[arg(long, default_value = "main")]
    pub policy: String,
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// Engine name.
    #[arg(long)]
    pub engine: String,
    /// Engine version (semver); the highest published when absent.
    #[arg(long)]
    pub version: Option<String>,
    /// Action name.
    #[arg(long)]
    pub action: String,
    /// Caller's role.
    #[arg(long)]
    pub role: Option<String>,
    /// Risk band (low, medium, high, critical by convention).
    #[arg(long)]
    pub risk_band: Option<String>,
    /// Region the call runs in.
    #[arg(long)]
    pub region: Option<String>,
    /// A data class the call touches (repeatable): public, confidential, pii, pci, phi.
    #[arg(long = "data-class")]
    pub data_classes: Vec<String>,
    /// Read consistency.
    #[arg(long, value_enum, default_value_t)]
    pub consistency: ConsistencyArg,
}

/// A context as written in a cases file (and shown back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    /// Tenant id.
    pub tenant: String,
    /// Engine name.
    pub engine: String,
    /// Action name.
    pub action: String,
    /// Engine version.
    #[serde(default)]
    pub version: Option<String>,
    /// Caller's role.
    #[serde(default)]
    pub role: Option<String>,
    /// Risk band.
    #[serde(default)]
    pub risk_band: Option<String>,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Data classes.
    #[serde(default)]
    pub data_classes: Vec<String>,
}

impl ContextFile {
    fn to_proto(&self) -> pb::EvaluationContext {
        pb::EvaluationContext {
            tenant: self.tenant.clone(),
            engine: self.engine.clone(),
            version: self.version.clone().unwrap_or_default(),
            action: self.action.clone(),
            role: self.role.clone().unwrap_or_default(),
            risk_band: self.risk_band.clone().unwrap_or_default(),
            region: self.region.clone().unwrap_or_default(),
            data_classes: self.data_classes.clone(),
        }
    }
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// The expected `allow`.
    pub allow: bool,
    /// The expected reason, when checked.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One case of a cases file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The request.
    pub context: ContextFile,
    /// The expectation.
    pub expect: ExpectFile,
}

/// Parses a cases file's bytes; `source_name` names it in errors.
pub fn parse_cases(bytes: &[u8], source_name: &str) -> Result<Vec<CaseFile>, LocalError> {
    let cases: Vec<CaseFile> = serde_json::from_slice(bytes)
        .map_err(|source| LocalError::JsonInvalid { source_name: source_name.to_owned(), source })?;
    if cases.is_empty() || cases.len() > POLICY_TEST_CASES_MAX {
        return Err(LocalError::ArgumentInvalid {
            argument: "--cases".into(),
            problem: format!("{source_name}: {} cases; give 1 to {POLICY_TEST_CASES_MAX}", cases.len()),
        });
    }
    Ok(cases)
}

fn read_source(path: &Path) -> Result<String, CliError> {
    let bytes = read_bounded(path, POLICY_SOURCE_BYTES_MAX)?;
    String::from_utf8(bytes).map_err(|_| {
        CliError::from(LocalError::ArgumentInvalid {
            argument: "--file".into(),
            problem: format!("{} is not UTF-8 text", path.display()),
        })
    })
}

/// A policy version as shown.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: u64,
    /// SHA-256 of the source.
    pub source_sha256: String,
    /// Revision of the put.
    pub put_revision: u64,
    /// Time of the put, Unix ms.
    pub put_time_ms: i64,
    /// The Rego source.
    pub source: String,
}

impl PolicyView {
    fn from_proto(policy: &pb::Policy) -> Self {
        PolicyView {
            policy: policy.policy.clone(),
            version: policy.version,
            source_sha256: policy.source_sha256.clone(),
            put_revision: policy.put_revision,
            put_time_ms: policy.put_time_ms,
            source: policy.source.clone(),
        }
    }

    fn fields(&self) -> Table {
        let mut table = Table::fields();
        table
            .field("policy", &self.policy)
            .field("version", self.version)
            .field("source_sha256", &self.source_sha256)
            .field("put_revision", self.put_revision)
            .field("put_time", format_rfc3339(self.put_time_ms));
        table
    }
}

/// A decision as shown.
#[derive(Debug, Serialize)]
pub struct DecisionView {
    /// Whether the call may run.
    pub allow: bool,
    /// Why.
    pub reason: String,
    /// Limits, when set.
    pub limits: Option<LimitsView>,
    /// `name@version` of the deciding policy.
    pub policy_version: String,
    /// Deterministic decision id.
    pub decision_id: String,
    /// Revision the decision saw.
    pub revision: u64,
}

/// Decision limits as shown.
#[derive(Debug, Serialize)]
pub struct LimitsView {
    /// Sustained rate.
    pub calls_per_minute: u64,
    /// Burst.
    pub burst: u64,
    /// Longest run.
    pub max_duration_ms: u64,
}

impl DecisionView {
    fn from_proto(decision: &pb::PolicyDecision) -> Self {
        DecisionView {
            allow: decision.allow,
            reason: decision.reason.clone(),
            limits: decision.limits.as_ref().map(|limits| LimitsView {
                calls_per_minute: limits.calls_per_minute,
                burst: limits.burst,
                max_duration_ms: limits.max_duration_ms,
            }),
            policy_version: decision.policy_version.clone(),
            decision_id: decision.decision_id.clone(),
            revision: decision.revision,
        }
    }

    fn limits_text(&self) -> String {
        self.limits.as_ref().map_or_else(String::new, |l| {
            format!("calls_per_minute={} burst={} max_duration_ms={}", l.calls_per_minute, l.burst, l.max_duration_ms)
        })
    }

    fn table(&self) -> Table {
        let mut table = Table::fields();
        table
            .field("allow", self.allow)
            .field("reason", &self.reason)
            .field("limits", self.limits_text())
            .field("policy_version", &self.policy_version)
            .field("decision_id", &self.decision_id)
            .field("revision", self.revision);
        table
    }
}

/// One `policy test` case result as shown.
#[derive(Debug, Serialize)]
pub struct CaseResultView {
    /// 1-based case number in the file.
    pub case: usize,
    /// Whether it matched its expectation.
    pub passed: bool,
    /// The expectation.
    pub expect: ExpectFile,
    /// The decision.
    pub decision: DecisionView,
}

/// Runs a `policy` command.
pub async fn run(command: PolicyCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        PolicyCommand::Put { name, file, expected_version } => {
            let source = read_source(&file)?;
            let client = connect(global).await?;
            let served = client.put_policy(&name, &source, expected_version).await?;
            let policy = served.value.policy.as_ref().map(PolicyView::from_proto);
            if let Some(view) = &policy {
                output.show(view, PolicyView::fields)?;
            }
            if !served.value.created {
                output.note("unchanged: the source equals the latest version's");
            }
            output.served_by(&served.meta);
        }
        PolicyCommand::Get { name, version, consistency } => {
            let client = connect(global).await?;
            let served = client.get_policy(&name, version.unwrap_or(0), consistency.into()).await?;
            let view = PolicyView::from_proto(&served.value);
            output.show(&view, PolicyView::fields)?;
            // In a table the source would be one escaped line: print it as written, after the fields.
            if output.format() == OutputFormat::Table {
                output.write_stdout(&format!("\n{}\n", view.source.trim_end()))?;
            }
            output.served_by(&served.meta);
        }
        PolicyCommand::List { consistency } => {
            let client = connect(global).await?;
            let served = client.list_all_policies(consistency.into()).await?;
            let views: Vec<PolicyView> = served.value.iter().map(PolicyView::from_proto).collect();
            output.show(&views, |views| {
                let mut table = Table::with_header(&["POLICY", "VERSION", "PUT_REVISION", "PUT_TIME", "SOURCE_SHA256"]);
                for view in views {
                    table.row([
                        view.policy.clone(),
                        view.version.to_string(),
                        view.put_revision.to_string(),
                        format_rfc3339(view.put_time_ms),
                        view.source_sha256.clone(),
                    ]);
                }
                table
            })?;
            output.served_by(&served.meta);
        }
        PolicyCommand::Eval(args) => {
            let context = ContextFile {
                tenant: args.tenant,
                engine: args.engine,
                action: args.action,
                version: args.version,
                role: args.role,
                risk_band: args.risk_band,
                region: args.region,
                data_classes: args.data_classes,
            };
            let client = connect(global).await?;
            let served = client.evaluate_policy(&args.policy, context.to_proto(), args.consistency.into()).await?;
            output.show(&DecisionView::from_proto(&served.value), DecisionView::table)?;
            output.served_by(&served.meta);
        }
        PolicyCommand::Test { file, cases, consistency } => {
            let source = read_source(&file)?;
            let source_name = cases.display().to_string();
            let cases = parse_cases(&read_bounded(&cases, POLICY_CASES_FILE_BYTES_MAX)?, &source_name)?;
            let request_cases = cases
                .iter()
                .map(|case| pb::PolicyTestCase {
                    context: Some(case.context.to_proto()),
                    expect_allow: case.expect.allow,
                    expect_reason: case.expect.reason.clone(),
                })
                .collect();
            let client = connect(global).await?;
            let served = client.test_policy(&source, request_cases, consistency.into()).await?;
            let views: Vec<CaseResultView> = served
                .value
                .results
                .iter()
                .zip(&cases)
                .enumerate()
                .map(|(index, (result, case))| CaseResultView {
                    case: index + 1,
                    passed: result.passed,
                    expect: case.expect.clone(),
                    decision: DecisionView::from_proto(&result.decision.clone().unwrap_or_default()),
                })
                .collect();
            output.show(&views, |views| {
                let mut table = Table::with_header(&["CASE", "RESULT", "EXPECT_ALLOW", "ALLOW", "REASON", "LIMITS"]);
                for view in views {
                    table.row([
                        view.case.to_string(),
                        if view.passed { "pass" } else { "FAIL" }.to_owned(),
                        view.expect.allow.to_string(),
                        view.decision.allow.to_string(),
                        view.decision.reason.clone(),
                        view.decision.limits_text(),
                    ]);
                }
                table
            })?;
            output.served_by(&served.meta);
            let failed = served.value.failed_count;
            if failed > 0 {
                return Err(CliError::PolicyTestFailed { failed, total: failed + served.value.passed_count });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_files_parse_with_optional_fields() {
        let bytes = br#"[
            {"context": {"tenant": "acme", "engine": "billing", "action": "charge", "risk_band": "critical",
                         "data_classes": ["pii"]},
             "expect": {"allow": false, "reason": "critical risk band is denied"}},
            {"context": {"tenant": "acme", "engine": "billing", "action": "charge"}, "expect": {"allow": true}}
        ]"#;
        let cases = parse_cases(bytes, "cases.json").expect("parses");
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].context.to_proto().risk_band, "critical");
        assert_eq!(cases[1].expect, ExpectFile { allow: true, reason: None });
    }

    #[test]
    fn cases_files_refuse_unknown_fields_and_empty_lists() {
        let unknown = br#"[{"context": {"tenant": "a", "engine": "b", "action": "c", "colour": "red"}, "expect": {"allow": true}}]"#;
        assert!(matches!(parse_cases(unknown, "x"), Err(LocalError::JsonInvalid { .. })));
        assert!(matches!(parse_cases(b"[]", "x"), Err(LocalError::ArgumentInvalid { .. })));
    }
}
