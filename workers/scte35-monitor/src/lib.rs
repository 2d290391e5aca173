//! The SCTE-35 monitor: every minute (Workers' minimum cron) it lists the
//! active SCTE-35 channels in D1 and makes sure each has its poller running
//! — a Channel DO alarm at the channel's segment cadence, so a cue is
//! detected within one target duration. Polling itself lives in the DO
//! (the channel's sequencer), so detection and registration are one step.

use worker::*;
use worker_shared::channel_client::{ChannelClient, ChannelRef};
use worker_shared::{bindings, now_ms};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    if let Err(e) = cycle(&env).await {
        worker_shared::metrics::log(
            worker_shared::metrics::Level::Error,
            "monitor_cycle_failed",
            &[("reason", &e.to_string())],
        );
    }
}

/// `GET /healthz`; `POST /run` runs one cycle now (operators, tests).
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    if !worker_shared::internal_ok(&req, &env) {
        return worker_shared::refuse_external();
    }
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/healthz") => Response::ok("monitor ok"),
        (Method::Post, "/run") => Response::from_json(&cycle(&env).await?),
        _ => Response::error("not found", 404),
    }
}

async fn cycle(env: &Env) -> Result<serde_json::Value> {
    let started = now_ms();
    let channels = worker_shared::list_channels(env).await?;
    let mut ensured = 0;
    let mut started_pollers = 0;
    let mut errors = 0;
    for ch in channels
        .iter()
        .filter(|c| c.config.active && c.config.scte35_enabled)
    {
        let client = ChannelClient::new(env, ChannelRef::new(&ch.org, &ch.slug));
        match client.ensure_poller().await {
            Ok(v) => {
                ensured += 1;
                if v["started"].as_bool() == Some(true) {
                    started_pollers += 1;
                }
            }
            Err(e) => {
                errors += 1;
                worker_shared::metrics::log(
                    worker_shared::metrics::Level::Error,
                    "ensure_poller_failed",
                    &[
                        ("org", &ch.org),
                        ("channel", &ch.slug),
                        ("reason", &e.to_string()),
                    ],
                );
            }
        }
    }
    worker_shared::count(env, "monitor", "cron_cycles", 1).await;
    // Operator metrics: minutes past their retention into hours (cheap
    // when there is nothing to roll: one indexed range each).
    worker_shared::metrics::rollup(env, now_ms()).await;
    let summary = serde_json::json!({
        "channels": ensured,
        "pollers_started": started_pollers,
        "errors": errors,
        "cycle_ms": now_ms() - started,
    });
    if let Ok(kv) = env.kv(bindings::KV) {
        if let Ok(p) = kv.put("monitor:last_cycle", summary.to_string()) {
            let _ = p.execute().await;
        }
    }
    Ok(summary)
}
