//! `keelctl token`: issue capability tokens (locally, with an `api-token`
//! key file), show what a token says, and revoke one on the cluster.
//!
//! ```text
//!   token issue --key api.key --sub alice [--tenant acme] --permission tenant.read … --ttl 1h
//!     ─▶ JWT (EdDSA, kid = the key's id) on stdout: use it with --token FILE or KEEL_TOKEN
//!   token show FILE            the claims, unverified
//!   token revoke --jti J [--exp-ms N] | --file FILE   ─▶ TrustService.RevokeToken
//! ```

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::{GlobalArgs, connect};
use keel_client::key_pair::KeyPair;
use keel_client::limits::{TOKEN_FILE_BYTES_MAX, TOKEN_LIFETIME_MAX};
use keel_client::local_error::LocalError;
use keel_client::token::{self, TokenClaims};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Audience used when `--audience` is not given (keeld's default `cluster.id`).
pub const AUDIENCE_DEFAULT: &str = "keel";

/// `keelctl token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a token signed with an api-token key file (nothing is sent).
    Issue(IssueArgs),
    /// Show a token's claims (the signature is not checked).
    Show {
        /// The token file.
        file: PathBuf,
    },
    /// Revoke a token on the cluster: every member refuses it from then on.
    Revoke(RevokeArgs),
}

/// `token issue` arguments.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Secret key file of a key holding the API_TOKEN purpose.
    #[arg(long)]
    pub key: PathBuf,
    /// Who the caller is (with client certificates required, the certificate's identity).
    #[arg(long)]
    pub sub: String,
    /// Scope the token to this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A permission (repeatable), e.g. tenant.read; `*` grants every one to a
    /// token without --tenant.
    #[arg(long = "permission", required = true)]
    pub permissions: Vec<String>,
    /// Lifetime: a number with s, m or h (at most 24h).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// The cluster id the token is for (keeld's `cluster.id`).
    #[arg(long, env = "KEEL_CLUSTER_ID", default_value = AUDIENCE_DEFAULT)]
    pub audience: String,
    /// Write the token to this file (mode 0600) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `token revoke` arguments.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false, id = "which")]
pub struct RevokeArgs {
    /// The token's id (its jti claim).
    #[arg(long, group = "which")]
    pub jti: Option<String>,
    /// The token's expiry, Unix ms (with --jti); default: the longest any token may live.
    #[arg(long, requires = "jti")]
    pub exp_ms: Option<u64>,
    /// A token file: its jti and exp are read from it.
    #[arg(long, group = "which")]
    pub file: Option<PathBuf>,
}

/// What `token show` and `token issue --out` report.
#[derive(Debug, Serialize)]
struct ClaimsView {
    sub: String,
    tenant: String,
    permissions: String,
    jti: String,
    audience: String,
    not_before: u64,
    expires: u64,
}

impl From<&TokenClaims> for ClaimsView {
    fn from(claims: &TokenClaims) -> Self {
        ClaimsView {
            sub: claims.sub.clone(),
            tenant: claims.tenant.clone().unwrap_or_default(),
            permissions: claims.permissions.join(","),
            jti: claims.jti.clone(),
            audience: claims.aud.clone(),
            not_before: claims.nbf,
            expires: claims.exp,
        }
    }
}

fn claims_table(view: &ClaimsView) -> Table {
    let mut table = Table::fields();
    table
        .field("sub", &view.sub)
        .field("tenant", &view.tenant)
        .field("permissions", &view.permissions)
        .field("jti", &view.jti)
        .field("audience", &view.audience)
        .field("not_before_s", view.not_before.to_string())
        .field("expires_s", view.expires.to_string());
    table
}

/// Parses `30s`, `15m`, `1h` (at most [`TOKEN_LIFETIME_MAX`]).
pub fn parse_ttl(text: &str) -> Result<Duration, LocalError> {
    let invalid = |problem: &str| LocalError::ArgumentInvalid { argument: "--ttl".into(), problem: problem.into() };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid("must be a number followed by s, m or h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        _ => return Err(invalid("must be a number followed by s, m or h")),
    };
    if seconds == 0 || seconds > TOKEN_LIFETIME_MAX.as_secs() {
        return Err(invalid("must be between 1s and 24h"));
    }
    Ok(Duration::from_secs(seconds))
}

/// The token in `path` (whitespace trimmed).
pub fn read_token_file(path: &Path) -> Result<String, LocalError> {
    let bytes = keel_client::local_file::read_bounded(path, TOKEN_FILE_BYTES_MAX)?;
    String::from_utf8(bytes).map(|text| text.trim().to_owned()).map_err(|_| LocalError::ArgumentInvalid {
        argument: format!("--token {}", path.display()),
        problem: "is not UTF-8 text".into(),
    })
}

/// Runs a `token` command.
pub async fn run(command: TokenCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        TokenCommand::Issue(args) => {
            let key = KeyPair::read_secret_file(&args.key)?;
            let ttl = parse_ttl(&args.ttl)?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mut claims = TokenClaims::new(&args.sub, &args.audience, args.permissions, now, ttl);
            claims.tenant = args.tenant;
            let issued = token::issue(&key, &claims)?;
            match args.out {
                None => output.write_stdout(&format!("{issued}\n")),
                Some(path) => {
                    keel_client::local_file::write(&path, format!("{issued}\n").as_bytes(), 0o600, false)?;
                    output.note(&format!("wrote the token to {}", path.display()));
                    output.show(&ClaimsView::from(&claims), claims_table)
                }
            }
        }
        TokenCommand::Show { file } => {
            let claims = token::read_claims(&read_token_file(&file)?)?;
            output.show(&ClaimsView::from(&claims), claims_table)
        }
        TokenCommand::Revoke(args) => {
            let (jti, exp_ms) = match (args.jti, args.file) {
                (Some(jti), _) => (jti, args.exp_ms.unwrap_or(0)),
                (None, Some(file)) => {
                    let claims = token::read_claims(&read_token_file(&file)?)?;
                    (claims.jti, claims.exp.saturating_mul(1000))
                }
                (None, None) => {
                    return Err(LocalError::ArgumentInvalid {
                        argument: "--jti".into(),
                        problem: "or --file is required".into(),
                    }
                    .into());
                }
            };
            let client = connect(global).await?;
            let served = client.revoke_token(&jti, exp_ms).await?;
            output.served_by(&served.meta);
            #[derive(Serialize)]
            struct Revoked {
                jti: String,
                created: bool,
                revoked_tokens: u64,
            }
            let view = Revoked { jti, created: served.value.created, revoked_tokens: served.value.revoked_tokens };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table
                    .field("jti", &view.jti)
                    .field("created", view.created.to_string())
                    .field("revoked_tokens", view.revoked_tokens.to_string());
                table
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_a_unit_and_within_a_day() {
        assert_eq!(parse_ttl("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m").ok(), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("24h").ok(), Some(Duration::from_secs(86_400)));
        for bad in ["", "h", "0s", "25h", "10", "1d", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
