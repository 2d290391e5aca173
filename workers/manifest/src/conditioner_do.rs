//! The ConditionerContainer Durable Object: starts the creative conditioner
//! (`cf-ssai conditioner`, the image of the repo's `Dockerfile`) as a
//! Cloudflare Container when conditioning jobs wait, and lets it stop itself
//! when idle (the image's default arguments are `--exit-when-idle-s 300`).
//!
//! Production only: `scripts/deploy.mjs` binds it (`CONDITIONER`), declares
//! the `[[containers]]` entry and gives the manifest worker a cron trigger
//! whose scheduled handler calls [`wake`]. The local `wrangler-manifest.toml`
//! does not bind it, so `wrangler dev` needs no Docker and the conditioner
//! runs there as a plain process.
//!
//! Instance `i` (of `CONDITIONER_INSTANCES`, the `[[containers]]`
//! `max_instances`) starts its container while more than `i` jobs wait, so
//! one job wakes one container and a backlog several; leases keep them
//! apart. While jobs wait or its container runs, it re-arms an alarm every
//! [`RECHECK_MS`].
//!
//! workers-rs 0.8.7's container API (`State::container`, `Container`)
//! covers `running` and `start`, but its `ContainerStartupOptions` carries
//! the environment as a JS `Map`, and workerd reads `env` as a record (an
//! object's own properties): the variables would be dropped. The options
//! are therefore built here as a plain object and passed to the runtime's
//! `start` directly. No `entrypoint` is passed: workerd's local Docker
//! client treats it as the command's arguments while the platform documents
//! it as the entrypoint; the image's own ENTRYPOINT and CMD are used.

use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{Function, Object, Reflect};
use worker::*;
use worker_shared::metrics::{log, Level};
use worker_shared::{bindings, now_ms};

/// The Durable Object binding (generated production config only).
pub const BINDING: &str = "CONDITIONER";
/// How many instances the cron wakes (`[[containers]]` `max_instances`).
const INSTANCES: &str = "CONDITIONER_INSTANCES";
/// The manifest worker's public URL: the conditioner's `CF_SSAI_API`.
const API: &str = "CONDITIONER_API";
/// A platform admin key (secret): the conditioner's `CF_SSAI_TOKEN`.
const TOKEN: &str = "CONDITIONER_TOKEN";
/// Re-check interval while jobs wait or the container runs.
const RECHECK_MS: i64 = 60_000;
/// Instances at most, whatever the config says.
const MAX_INSTANCES: u32 = 16;

#[durable_object]
pub struct ConditionerContainer {
    state: State,
    env: Env,
}

impl DurableObject for ConditionerContainer {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    /// `POST /wake?i=N` (from [`wake`]): this is instance N; check now.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        if let Some(i) = url
            .query_pairs()
            .find(|(k, _)| k == "i")
            .and_then(|(_, v)| v.parse::<u32>().ok())
        {
            self.state.storage().put("index", i).await?;
        }
        let status = self.check().await?;
        Response::from_json(&status)
    }

    /// Errors are logged and returned (the runtime retries the alarm; the
    /// cron wakes the object again within a minute anyway).
    async fn alarm(&self) -> Result<Response> {
        if let Err(e) = self.check().await {
            log(
                Level::Error,
                "conditioner_check_failed",
                &[("reason", &e.to_string())],
            );
            return Err(e);
        }
        Response::ok("checked")
    }
}

impl ConditionerContainer {
    /// Start the container if jobs wait for this instance and it is not
    /// running; re-arm the alarm while there is something to watch.
    async fn check(&self) -> Result<serde_json::Value> {
        let index: u32 = self.state.storage().get("index").await?.unwrap_or(0);
        let Some(container) = self.state.container() else {
            log(
                Level::Error,
                "conditioner_no_container",
                &[(
                    "reason",
                    "no container attached to this Durable Object ([[containers]] missing)",
                )],
            );
            return Ok(serde_json::json!({ "index": index, "error": "no container attached" }));
        };
        let waiting = self.waiting().await?;
        let mut running = container.running();
        let mut started = false;
        if !running && waiting > u64::from(index) {
            self.start(&container)?;
            started = true;
            running = true;
            log(
                Level::Info,
                "conditioner_started",
                &[
                    ("index", &index.to_string()),
                    ("waiting", &waiting.to_string()),
                ],
            );
            // Learn how it ended (an explicit monitor: the runtime's
            // background one resets the object on an abnormal exit).
            self.state.wait_until(async move {
                let exit = container.wait_for_exit().await;
                let (level, reason) = match &exit {
                    Ok(()) => (Level::Info, String::new()),
                    Err(e) => (Level::Error, e.to_string()),
                };
                log(
                    level,
                    "conditioner_exited",
                    &[("index", &index.to_string()), ("reason", &reason)],
                );
            });
        }
        if running || waiting > u64::from(index) {
            let at = worker::js_sys::Date::new(&((now_ms() + RECHECK_MS) as f64).into());
            self.state
                .storage()
                .set_alarm(ScheduledTime::new(at))
                .await?;
        }
        Ok(serde_json::json!({
            "index": index,
            "waiting": waiting,
            "running": running,
            "started": started,
        }))
    }

    async fn waiting(&self) -> Result<u64> {
        // Queued jobs, and running ones whose lease expired (their
        // conditioner is gone; the lease retries them).
        worker_shared::store::jobs::waiting(&self.env.d1(bindings::DB)?, now_ms()).await
    }

    /// `container.start({enableInternet, env})`: the conditioner downloads
    /// ad sources and calls the admin API over the internet.
    fn start(&self, container: &Container) -> Result<()> {
        let api = self.env.var(API).map(|v| v.to_string()).map_err(|_| {
            Error::RustError(format!("{API} is not set (scripts/deploy.mjs sets it)"))
        })?;
        let token = self.env.secret(TOKEN).map(|v| v.to_string()).map_err(|_| {
            Error::RustError(format!(
                "the {TOKEN} secret is not set (scripts/deploy.mjs sets it)"
            ))
        })?;
        let env = Object::new();
        Reflect::set(&env, &"CF_SSAI_API".into(), &api.into())?;
        Reflect::set(&env, &"CF_SSAI_TOKEN".into(), &token.into())?;
        let options = Object::new();
        Reflect::set(&options, &"enableInternet".into(), &JsValue::TRUE)?;
        Reflect::set(&options, &"env".into(), &env)?;
        let handle: &JsValue = container.as_ref();
        let start: Function = Reflect::get(handle, &"start".into())?.dyn_into()?;
        start.call1(handle, &options)?;
        Ok(())
    }
}

/// The cron's part (production): poke every instance; each decides for
/// itself from the queue. Errors are logged, never raised.
pub async fn wake(env: &Env) {
    let Ok(ns) = env.durable_object(BINDING) else {
        return;
    };
    let n = env
        .var(INSTANCES)
        .ok()
        .and_then(|v| v.to_string().parse::<u32>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_INSTANCES);
    let pokes = (0..n).map(|i| {
        let ns = &ns;
        async move {
            let stub = ns.id_from_name(&format!("conditioner-{i}"))?.get_stub()?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post);
            let req = Request::new_with_init(&format!("https://conditioner/wake?i={i}"), &init)?;
            stub.fetch_with_request(req).await
        }
    });
    for (i, r) in futures::future::join_all(pokes)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = r {
            log(
                Level::Error,
                "conditioner_wake_failed",
                &[("index", &i.to_string()), ("reason", &e.to_string())],
            );
        }
    }
}
