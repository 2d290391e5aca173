//! The Channel Durable Object's typed client: one place builds the stub
//! and the requests, for every worker (manifest playback and admin, the
//! monitor). The DO (in the manifest worker) reads the same types.

use cf_ssai_core::channel::sequencer::OriginWindow;
use cf_ssai_core::model::ChannelBreaks;
use cf_ssai_core::scte35::cues::CueEvent;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use worker::*;

/// Which channel (org + slug): the DO's name and identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    pub org: String,
    pub slug: String,
}

impl ChannelRef {
    pub fn new(org: &str, slug: &str) -> Self {
        ChannelRef {
            org: org.into(),
            slug: slug.into(),
        }
    }
}

/// `POST /sync`: cues seen in an origin window (request path or poller).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    pub channel: ChannelRef,
    pub events: Vec<CueEvent>,
    pub cadence_ms: u64,
    /// The window's last MSN when the caller examined every cue in it.
    pub checked_through_msn: Option<u64>,
    /// The examined window (discontinuities, last PDT: merges and epochs).
    #[serde(default)]
    pub window: Option<OriginWindow>,
    /// The audience cohort the answer is for ("" the default): its pods
    /// and its discontinuity count.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cohort: String,
}

/// An edge saw viewers of a cohort (`viewer.cohort`): what they share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CohortReport {
    pub channel: ChannelRef,
    pub viewer: cf_ssai_core::ads::request::Viewer,
}

/// The operator's cue commands (`POST /cue {"type": …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CueCommand {
    Start,
    Stop,
    Schedule,
}

impl CueCommand {
    pub fn parse(s: &str) -> Option<CueCommand> {
        match s {
            "start" => Some(CueCommand::Start),
            "stop" => Some(CueCommand::Stop),
            "schedule" => Some(CueCommand::Schedule),
            _ => None,
        }
    }
}

/// `POST /cue` to the DO (already validated and anchored by the worker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CueRequest {
    pub channel: ChannelRef,
    pub kind: CueCommand,
    pub break_id: String,
    pub anchor_msn: u64,
    pub anchor_pdt_ms: Option<i64>,
    pub duration_ms: u64,
    pub cadence_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CueResponse {
    pub status: u16,
    pub error: Option<String>,
    pub record: Option<cf_ssai_core::model::BreakRecord>,
}

/// A channel's Durable Object, by name.
pub struct ChannelClient<'e> {
    env: &'e Env,
    pub channel: ChannelRef,
}

impl<'e> ChannelClient<'e> {
    pub fn new(env: &'e Env, channel: ChannelRef) -> Self {
        ChannelClient { env, channel }
    }

    fn stub(&self) -> Result<Stub> {
        self.env
            .durable_object(crate::bindings::CHANNEL_DO)?
            .id_from_name(&crate::channel_key(&self.channel.org, &self.channel.slug))?
            .get_stub()
    }

    async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(serde_json::to_string(body)?.into()));
        let req = Request::new_with_init(&format!("https://channel{path}"), &init)?;
        self.stub()?.fetch_with_request(req).await?.json().await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.stub()?
            .fetch_with_str(&format!("https://channel{path}"))
            .await?
            .json()
            .await
    }

    /// Feed an examined window; the consistent view comes back.
    pub async fn sync(&self, req: &SyncRequest) -> Result<ChannelBreaks> {
        self.post("/sync", req).await
    }

    pub async fn cue(&self, req: &CueRequest) -> Result<CueResponse> {
        self.post("/cue", req).await
    }

    /// Report a cohort's viewers (the DO decides its pods from the next
    /// break on).
    pub async fn cohort_seen(&self, req: &CohortReport) -> Result<serde_json::Value> {
        self.post("/cohort", req).await
    }

    /// The published view, as the DO holds it.
    pub async fn state(&self) -> Result<ChannelBreaks> {
        self.get("/state").await
    }

    /// The poller's record and the requests this object served.
    pub async fn poll_stats(&self) -> Result<serde_json::Value> {
        self.get("/poll-stats").await
    }

    /// Start the channel's poller if it is not running.
    pub async fn ensure_poller(&self) -> Result<serde_json::Value> {
        self.post("/ensure-poller", &self.channel).await
    }

    /// Smoke test: a storage round trip.
    pub async fn ping(&self) -> Result<serde_json::Value> {
        self.post("/ping", &self.channel).await
    }
}
