//! A synchronous driver of the core's sans-IO edge
//! (`cf_ssai_core::splice::edge`) for tests and simulations: the same loop
//! the manifest worker runs, with the reads answered by an [`EdgeIo`] (a
//! simulated KV with lag, a location's answer cache, an in-process Channel
//! machine).

use crate::driver::Driver;
use cf_ssai_core::model::{ChannelBreaks, ChannelView, Pod};
use cf_ssai_core::splice::edge::{self, DoQuery, MediaRequest, Need, PodKey, Reads, Served, Step};

/// Where a simulated edge node reads from.
pub trait EdgeIo {
    /// The channel's KV view as this node sees it.
    fn view(&mut self) -> Option<ChannelView>;
    /// A break's pod (or a cohort's) from KV as this node sees it.
    fn pod(&mut self, key: &PodKey) -> Option<Pod>;
    /// This location's copy of the DO's answer (≤ `DO_ANSWER_TTL_S` old).
    fn cached_answer(&mut self) -> Option<ChannelBreaks>;
    /// Ask the Channel DO; `None` when it is unreachable. A driver that
    /// models the location cache keeps the answer for the next requests.
    fn ask_do(&mut self, q: &DoQuery) -> Option<ChannelBreaks>;
}

/// Does one read the edge asked for.
pub fn read(io: &mut impl EdgeIo, need: Need, reads: &mut Reads) {
    match need {
        Need::View => reads.view = Some(io.view()),
        Need::Pods(keys) => {
            for k in keys {
                let p = io.pod(&k).map(std::rc::Rc::new);
                reads.pods.insert(k, p);
            }
        }
        Need::CachedAnswer => reads.cached_answer = Some(io.cached_answer()),
        Need::Do(q) => {
            let a = io.ask_do(&q);
            reads.do_answers.push((q, a));
        }
    }
}

/// Runs `step` to its answer. The edge never asks for a read twice, so
/// this ends; a bound guards the tests against a regression that would.
pub fn drive<T>(io: &mut impl EdgeIo, reads: &mut Reads, step: impl Fn(&Reads) -> Step<T>) -> T {
    for _ in 0..64 {
        match step(reads) {
            Step::Done(t) => return t,
            Step::Need(n) => read(io, n, reads),
        }
    }
    panic!("the edge asked for more than 64 reads: it must never ask for one twice");
}

/// One media playlist request served as the manifest worker serves it.
pub fn serve(io: &mut impl EdgeIo, req: &MediaRequest<'_>) -> Served {
    drive(io, &mut Reads::default(), |r| edge::playlist(req, r))
}

/// An edge node reading KV as a location lagging by `lag` sees it, and the
/// in-process DO (no location answer cache: each miss asks the DO, the
/// strictest case).
pub struct LaggingNode<'a> {
    pub seq: &'a mut Driver,
    pub lag: i64,
    pub now: i64,
}

impl EdgeIo for LaggingNode<'_> {
    fn view(&mut self) -> Option<ChannelView> {
        self.seq.kv.view(self.now, self.lag).cloned()
    }
    fn pod(&mut self, id: &PodKey) -> Option<Pod> {
        self.seq.kv.pod(self.now, self.lag, id).cloned()
    }
    fn cached_answer(&mut self) -> Option<ChannelBreaks> {
        None
    }
    fn ask_do(&mut self, q: &DoQuery) -> Option<ChannelBreaks> {
        self.seq.run_until(self.now);
        self.seq.feed(q.input());
        Some(self.seq.machine.breaks.for_cohort(&q.cohort))
    }
}
