//! `keel-bench`: Keel against etcd on one machine; see `chaos/README.md`.

use clap::Parser;
use keel_chaos::bench::{Args, render_markdown, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = keel_chaos::until_interrupted(run(&args)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_markdown(&report));
    }
    Ok(())
}
