//! `keelctl events`: publish user events and watch the change stream.
//!
//! `watch` prints one line per event (table mode: revision, kind, tenant,
//! engine, attributes; JSON mode: one JSON object per line) and keeps going,
//! reconnecting to another member where a stream breaks, until `--count`
//! events were printed or `--idle-exit-ms` passed without one. Progress
//! messages go to stderr in table mode, so stdout holds events only.

use super::error::CliError;
use super::output::{Output, OutputFormat};
use super::table::Table;
use super::{GlobalArgs, connect};
use keel_client::events::{WatchItem, WatchOptions};
use keel_client::pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes read from `--payload-file` at most (the server's limit is 1 MiB).
pub const PAYLOAD_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// `keelctl events …`
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Publish a user event.
    Publish(PublishArgs),
    /// Stream events from a revision on (default: from now).
    Watch(WatchArgs),
}

/// `keelctl events publish` arguments.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The topic (a name: lowercase letters, digits, '-', '_', '.').
    #[arg(long)]
    pub topic: String,
    /// The tenant the event concerns.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The engine the event concerns.
    #[arg(long)]
    pub engine: Option<String>,
    /// The payload, as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// A file whose bytes are the payload.
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Deduplicates retries of this publish (e.g. from a script that may
    /// run twice); default: a fresh key per invocation.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `keelctl events watch` arguments.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// First revision to show; 0: only changes from now on.
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
    /// Only this kind, e.g. TENANT_CREATED (repeatable).
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only events concerning this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only events concerning this engine.
    #[arg(long)]
    pub engine: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no event arrived for this many milliseconds.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
}

/// An event as shown.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// Revision of the change.
    pub revision: u64,
    /// Kind name.
    pub kind: String,
    /// Leader time of the change, Unix ms.
    pub time_ms: u64,
    /// Tenant concerned, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    /// Engine concerned, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// Kind-specific attributes.
    pub attributes: BTreeMap<String, String>,
    /// USER_EVENT payload as text (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl EventView {
    fn from_proto(event: &pb::Event) -> Self {
        EventView {
            revision: event.revision,
            kind: event.kind.clone(),
            time_ms: event.time_ms,
            tenant: event.tenant.clone(),
            engine: event.engine.clone(),
            attributes: event.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            payload: (event.kind == "USER_EVENT").then(|| String::from_utf8_lossy(&event.payload).into_owned()),
        }
    }

    fn line(&self) -> String {
        let mut attributes: Vec<String> = self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(payload) = &self.payload {
            attributes.push(format!("payload={payload:?}"));
        }
        let dash = |text: &str| if text.is_empty() { "-".to_owned() } else { text.to_owned() };
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.revision,
            self.kind,
            dash(&self.tenant),
            dash(&self.engine),
            attributes.join(" ")
        )
    }
}

/// Runs one `events` command.
pub async fn run(command: EventsCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        EventsCommand::Publish(args) => publish(args, global, output).await,
        EventsCommand::Watch(args) => watch(args, global, output).await,
    }
}

async fn publish(args: PublishArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) => keel_client::local_file::read_bounded(path, PAYLOAD_FILE_BYTES_MAX)?,
        (None, None) => Vec::new(),
    };
    let client = connect(global).await?;
    let request = pb::PublishEventRequest {
        topic: args.topic,
        tenant: args.tenant.unwrap_or_default(),
        engine: args.engine.unwrap_or_default(),
        payload,
        idempotency_key: args.idempotency_key.unwrap_or_default(),
    };
    let served = client.publish_event(request).await?;
    #[derive(Serialize)]
    struct Published {
        revision: u64,
        is_replay: bool,
    }
    let view = Published { revision: served.value.revision, is_replay: served.value.is_replay };
    output.show(&view, |view| {
        let mut table = Table::fields();
        table.field("revision", view.revision).field("is_replay", view.is_replay);
        table
    })?;
    output.served_by(&served.meta);
    Ok(())
}

async fn watch(args: WatchArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let options = WatchOptions {
        from_revision: args.from_revision,
        kinds: args.kinds,
        tenant: args.tenant,
        engine: args.engine,
        progress_interval: None,
    };
    let mut watch = client.watch(options);
    let mut n_shown: u64 = 0;
    let idle_exit = args.idle_exit_ms.map(Duration::from_millis);
    let mut last_event = tokio::time::Instant::now();
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let item = match idle_exit {
            Some(idle) => {
                let left = idle.saturating_sub(last_event.elapsed());
                match tokio::time::timeout(left, watch.next()).await {
                    Ok(item) => item?,
                    Err(_) => return Ok(()),
                }
            }
            None => watch.next().await?,
        };
        match item {
            WatchItem::Progress(revision) => {
                if output.format() == OutputFormat::Table {
                    output.note(&format!("(progress: revision {revision})"));
                }
            }
            WatchItem::Events(events) => {
                last_event = tokio::time::Instant::now();
                for event in &events {
                    let view = EventView::from_proto(event);
                    let text = match output.format() {
                        OutputFormat::Table => view.line(),
                        OutputFormat::Json => {
                            let mut text = serde_json::to_string(&view)
                                .map_err(|error| CliError::Output { source: std::io::Error::other(error) })?;
                            text.push('\n');
                            text
                        }
                    };
                    output.write_stdout(&text)?;
                    n_shown += 1;
                    if args.count.is_some_and(|count| n_shown >= count) {
                        return Ok(());
                    }
                }
            }
        }
    }
}
