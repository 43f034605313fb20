//! Where `keelctl` writes results, and in which format.
//!
//! Results go to stdout, as an aligned table or as JSON with stable field
//! names. The "served by" line goes to stderr in table mode so that stdout
//! stays parseable. A closed stdout (e.g. `keelctl … | head -1`) ends output
//! quietly instead of failing the command.

use super::error::CliError;
use super::table::Table;
use keel_client::served::ResponseMeta;
use serde::Serialize;
use std::io::Write;

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned plain-text columns.
    Table,
    /// Pretty-printed JSON.
    Json,
}

/// The command's output streams and format.
pub struct Output<'a> {
    format: OutputFormat,
    stdout: &'a mut dyn Write,
    stderr: &'a mut dyn Write,
}

impl<'a> Output<'a> {
    /// Output in `format` to the given streams.
    pub fn new(format: OutputFormat, stdout: &'a mut dyn Write, stderr: &'a mut dyn Write) -> Self {
        Output { format, stdout, stderr }
    }

    /// The format in use.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Writes `view` as JSON, or the table `to_table` builds from it.
    pub fn show<V: Serialize>(&mut self, view: &V, to_table: impl FnOnce(&V) -> Table) -> Result<(), CliError> {
        let text = match self.format {
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(view)
                    .map_err(|error| CliError::Output { source: std::io::Error::other(error) })?;
                text.push('\n');
                text
            }
            OutputFormat::Table => to_table(view).render(),
        };
        self.write_stdout(&text)
    }

    /// Writes raw text to stdout.
    pub fn write_stdout(&mut self, text: &str) -> Result<(), CliError> {
        match self.stdout.write_all(text.as_bytes()).and_then(|()| self.stdout.flush()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(source) => Err(CliError::Output { source }),
        }
    }

    /// In table mode, notes on stderr which node served the response.
    pub fn served_by(&mut self, meta: &ResponseMeta) {
        if self.format == OutputFormat::Table {
            // Best effort: a closed stderr must not fail a command that succeeded.
            let _ = writeln!(self.stderr, "({meta})");
        }
    }

    /// A note for humans on stderr (never part of the parseable output).
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.stderr, "{text}");
    }
}
