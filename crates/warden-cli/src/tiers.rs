//! `warden tiers`: which tiers and runtimes this node offers, and why not
//! when it does not.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct TiersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Offer {
    tier: &'static str,
    runtime: &'static str,
    available: bool,
    detail: String,
}

/// Prints what this node offers; exits 0 when at least one tier works.
pub async fn run(args: &TiersArgs, socket: &Path) -> i32 {
    let mut offers = Vec::new();
    let process = warden_backend::ProcessBackend::new(warden_backend::ProcessBackendConfig::default())
        .map(|_| "namespaces, cgroups, seccomp".to_owned())
        .map_err(|e| e.to_string());
    offers.push(offer("process", "native", process));
    let engine = warden_backend::container::probe(socket, Duration::from_secs(5)).await;
    for rt in warden_backend::container::RUNTIMES {
        let state = match &engine {
            Ok(info) if info.runtimes.iter().any(|r| r == rt) => {
                Ok(format!("Docker {} at {}", info.version, socket.display()))
            }
            Ok(info) => Err(format!(
                "the engine at {} has no `{rt}` runtime (it has: {})",
                socket.display(),
                info.runtimes.join(", ")
            )),
            Err(e) => Err(e.to_string()),
        };
        offers.push(offer("container", rt, state));
    }
    for rt in ["gvisor", "kata"] {
        offers.push(offer("pod", rt, Err("the pod tier is not built in this version".into())));
    }
    if args.json {
        match serde_json::to_string_pretty(&offers) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("warden: error: {e}");
                return warden_core::exit_code::WARDEN_ERROR;
            }
        }
    } else {
        println!("{:<10} {:<8} {:<4} DETAIL", "TIER", "RUNTIME", "OK");
        for o in &offers {
            println!("{:<10} {:<8} {:<4} {}", o.tier, o.runtime, if o.available { "yes" } else { "no" }, o.detail);
        }
    }
    if offers.iter().any(|o| o.available) { 0 } else { warden_core::exit_code::WARDEN_ERROR }
}

fn offer(tier: &'static str, runtime: &'static str, state: Result<String, String>) -> Offer {
    match state {
        Ok(detail) => Offer { tier, runtime, available: true, detail },
        Err(detail) => Offer { tier, runtime, available: false, detail },
    }
}
