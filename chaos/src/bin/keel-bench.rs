//! `keel-bench`: Keel against etcd on one machine; see `chaos/README.md`.

use clap::Parser;
use keel_chaos::bench::{Args, render_markdown, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Returning drops the clusters: processes are killed and temp dirs removed, also on Ctrl-C.
    let report = tokio::select! {
        report = run(&args) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_markdown(&report));
    }
    Ok(())
}
