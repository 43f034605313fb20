//! `keel-campaign`: chaos rounds against a 3-member keeld cluster under
//! writes; see `chaos/README.md`. Exits non-zero when a round does not
//! recover or an acknowledged write is lost.

use clap::Parser;
use keel_chaos::campaign::{CampaignArgs, render_markdown, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = CampaignArgs::parse();
    let report = keel_chaos::until_interrupted(run(&args)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_markdown(&report));
    }
    anyhow::ensure!(report.lost.is_empty(), "{} acknowledged writes lost: {:?}", report.lost.len(), report.lost);
    Ok(())
}
