//! The target workload's pods as the warm pool sees them: which readiness tier each is in,
//! and which cold starts (or placeholder-assisted starts) it may learn from.
//!
//! Owns: [`PodFacts`] (what one pod's lifecycle says, in plain numbers), the tier counts
//! ([`Capacity`]), the sleep state machine's names ([`SleepState`]), and turning pods that
//! became Ready into time-to-ready observations ([`ReadyLedger`]), attributing a start to
//! the placeholder tier when it landed where one of the pool's placeholders was preempted.
//! Does not own: reading pods from the cluster (`pods`), or fitting the durations
//! (`crate::time_to_ready`). No Kubernetes types here: plain facts in, plain facts out.

use super::crd::Tier;
use std::collections::{HashSet, VecDeque};

/// Where a replica is in the sleep cycle; `None` on a pod means awake (or never touched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepState {
    /// Out of the Service, finishing its in-flight requests before it is put to sleep.
    Draining,
    /// Asleep (vLLM sleep mode): holds its GPU, serves nothing, out of the Service.
    Asleep,
    /// Told to wake; back in the Service once the engine says it is awake.
    Waking,
}

impl SleepState {
    pub fn as_str(self) -> &'static str {
        match self {
            SleepState::Draining => "draining",
            SleepState::Asleep => "asleep",
            SleepState::Waking => "waking",
        }
    }

    pub fn parse(s: &str) -> Option<SleepState> {
        match s {
            "draining" => Some(SleepState::Draining),
            "asleep" => Some(SleepState::Asleep),
            "waking" => Some(SleepState::Waking),
            _ => None,
        }
    }
}

/// One pod of the target, reduced to what the warm pool decides on. Times are seconds since
/// the Unix epoch, as the apiserver recorded them (whole seconds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodFacts {
    pub uid: String,
    pub name: String,
    pub created: f64,
    /// When the scheduler bound it (PodScheduled turned True).
    pub scheduled: Option<f64>,
    /// When Ready last turned True.
    pub ready_since: Option<f64>,
    pub ready: bool,
    pub terminating: bool,
    /// Container restarts: a restarted pod's Ready time is not its cold start.
    pub restarts: u32,
    pub node: Option<String>,
    pub ip: Option<String>,
    pub sleep: Option<SleepState>,
    /// When the current sleep state was entered.
    pub sleep_since: Option<f64>,
}

impl PodFacts {
    /// Ready, awake, not leaving: serving capacity.
    pub fn is_serving(&self) -> bool {
        self.ready && !self.terminating && self.sleep.is_none()
    }
}

/// The target's replicas by tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// Ready and awake.
    pub serving: u32,
    /// Created and not yet Ready (a cold start in progress).
    pub pending: u32,
    /// Asleep, or draining on the way to sleep: out of the Service.
    pub sleeping: u32,
    /// Told to wake, not yet back.
    pub waking: u32,
    /// The pool's placeholder pods.
    pub placeholders: u32,
}

impl Capacity {
    pub fn of(pods: &[PodFacts], placeholders: u32) -> Capacity {
        let mut c = Capacity {
            placeholders,
            ..Capacity::default()
        };
        for pod in pods.iter().filter(|p| !p.terminating) {
            match pod.sleep {
                Some(SleepState::Draining | SleepState::Asleep) => c.sleeping += 1,
                Some(SleepState::Waking) => c.waking += 1,
                None if pod.ready => c.serving += 1,
                None => c.pending += 1,
            }
        }
        c
    }

    /// Replicas that exist (every tier but placeholders).
    pub fn replicas(&self) -> u32 {
        self.serving + self.pending + self.sleeping + self.waking
    }
}

/// A placeholder of the pool that went away without the pool deleting it: the scheduler
/// preempted it for a real replica on `node`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preemption {
    pub node: String,
    /// When the pool noticed (the preemption happened since the previous look).
    pub noticed: f64,
}

/// How long before a preemption was noticed the preemptor may have been created: the
/// scheduler preempts within a scheduling cycle of the pod's creation, and the pool notices
/// at its next sync (at most a sync period later) — a minute covers both with room.
const PREEMPTOR_CREATED_WITHIN_SECS: f64 = 60.0;
/// Preemptions are remembered this long for a preemptor to become Ready (a placeholder-
/// assisted start still pulls the image and loads the weights).
const PREEMPTION_MEMORY_SECS: f64 = 1800.0;
/// Pods remembered as counted: enough for any fleet between two restarts' watermarks.
const MAX_COUNTED: usize = 4096;

/// One time-to-ready observation.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyObservation {
    pub tier: Tier,
    pub seconds: f64,
    /// When the pod became Ready (the watermark after this observation).
    pub at: f64,
    pub pod: String,
}

/// Which pods have been learned from, and the preemptions that may explain new ones.
#[derive(Debug, Clone, Default)]
pub struct ReadyLedger {
    /// Pods already counted (by UID), oldest first.
    counted: VecDeque<String>,
    counted_set: HashSet<String>,
    /// Ready transitions at or before this time were counted before a restart.
    pub watermark: f64,
    preemptions: VecDeque<Preemption>,
}

impl ReadyLedger {
    /// A ledger that resumes after `watermark` (from the status of a previous run).
    pub fn resume(watermark: f64) -> ReadyLedger {
        ReadyLedger {
            watermark,
            ..ReadyLedger::default()
        }
    }

    pub fn note_preemption(&mut self, preemption: Preemption) {
        self.preemptions.push_back(preemption);
    }

    /// Cold and placeholder-assisted starts among `pods` not yet counted: created → Ready of
    /// pods that became Ready after the watermark, never restarted, and were never put to
    /// sleep (a woken pod's Ready time says nothing about a start).
    pub fn observe(&mut self, pods: &[PodFacts], now: f64) -> Vec<ReadyObservation> {
        while self
            .preemptions
            .front()
            .is_some_and(|p| p.noticed < now - PREEMPTION_MEMORY_SECS)
        {
            self.preemptions.pop_front();
        }
        let mut fresh: Vec<&PodFacts> = pods
            .iter()
            .filter(|p| p.ready && p.restarts == 0 && p.sleep.is_none())
            .filter(|p| p.ready_since.is_some_and(|t| t > self.watermark))
            .filter(|p| !self.counted_set.contains(&p.uid))
            .collect();
        fresh.sort_by(|a, b| {
            a.ready_since
                .partial_cmp(&b.ready_since)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut out = Vec::new();
        for pod in fresh {
            let Some(ready) = pod.ready_since else {
                continue;
            };
            let tier = match self.take_preemption(pod) {
                true => Tier::Placeholder,
                false => Tier::Cold,
            };
            self.remember(pod.uid.clone());
            out.push(ReadyObservation {
                tier,
                seconds: ready - pod.created,
                at: ready,
                pod: pod.name.clone(),
            });
        }
        out
    }

    /// Consumes the preemption on this pod's node that it plausibly caused.
    fn take_preemption(&mut self, pod: &PodFacts) -> bool {
        let Some(node) = &pod.node else { return false };
        let position = self.preemptions.iter().position(|p| {
            &p.node == node
                && pod.created <= p.noticed
                && pod.created >= p.noticed - PREEMPTOR_CREATED_WITHIN_SECS
        });
        match position {
            Some(i) => {
                self.preemptions.remove(i);
                true
            }
            None => false,
        }
    }

    fn remember(&mut self, uid: String) {
        if self.counted_set.insert(uid.clone()) {
            self.counted.push_back(uid);
        }
        while self.counted.len() > MAX_COUNTED {
            if let Some(old) = self.counted.pop_front() {
                self.counted_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: f64, ready_since: Option<f64>) -> PodFacts {
        PodFacts {
            uid: format!("uid-{name}"),
            name: name.into(),
            created,
            scheduled: Some(created + 1.0),
            ready_since,
            ready: ready_since.is_some(),
            node: Some("node-a".into()),
            ..PodFacts::default()
        }
    }

    #[test]
    fn counts_each_tier_once() {
        let mut asleep = pod("s", 0.0, Some(10.0));
        asleep.sleep = Some(SleepState::Asleep);
        let mut draining = pod("d", 0.0, Some(10.0));
        draining.sleep = Some(SleepState::Draining);
        let mut waking = pod("w", 0.0, Some(10.0));
        waking.sleep = Some(SleepState::Waking);
        let mut leaving = pod("t", 0.0, Some(10.0));
        leaving.terminating = true;
        let pods = [
            pod("a", 0.0, Some(10.0)),
            pod("b", 0.0, Some(12.0)),
            pod("p", 20.0, None),
            asleep,
            draining,
            waking,
            leaving,
        ];
        let c = Capacity::of(&pods, 3);
        assert_eq!(
            c,
            Capacity {
                serving: 2,
                pending: 1,
                sleeping: 2,
                waking: 1,
                placeholders: 3
            }
        );
        assert_eq!(c.replicas(), 6);
    }

    #[test]
    fn learns_each_start_once_and_resumes_after_the_watermark() {
        let mut ledger = ReadyLedger::resume(100.0);
        let pods = [
            pod("before", 0.0, Some(90.0)),  // counted before a restart
            pod("cold", 100.0, Some(160.0)), // 60 s
            pod("pending", 150.0, None),     // not Ready yet
        ];
        let seen = ledger.observe(&pods, 170.0);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].tier, seen[0].seconds), (Tier::Cold, 60.0));
        assert!(ledger.observe(&pods, 175.0).is_empty(), "counted once");
    }

    #[test]
    fn a_restarted_or_woken_pod_is_not_a_start() {
        let mut ledger = ReadyLedger::default();
        let mut restarted = pod("r", 0.0, Some(500.0));
        restarted.restarts = 1;
        let mut woken = pod("w", 0.0, Some(500.0));
        woken.sleep = Some(SleepState::Waking);
        assert!(ledger.observe(&[restarted, woken], 600.0).is_empty());
    }

    #[test]
    fn a_start_where_a_placeholder_was_preempted_is_a_placeholder_start() {
        let mut ledger = ReadyLedger::default();
        // Placeholder on node-a gone at the sync at 105; the pod was created at 100.
        ledger.note_preemption(Preemption {
            node: "node-a".into(),
            noticed: 105.0,
        });
        let mut elsewhere = pod("other-node", 100.0, Some(130.0));
        elsewhere.node = Some("node-b".into());
        let pods = [
            pod("preemptor", 100.0, Some(125.0)),
            elsewhere,
            pod("second", 101.0, Some(140.0)),
        ];
        let seen = ledger.observe(&pods, 150.0);
        let tiers: Vec<_> = seen
            .iter()
            .map(|o| (o.pod.as_str(), o.tier, o.seconds))
            .collect();
        // One preemption explains one start: the first Ready on that node.
        assert_eq!(
            tiers,
            vec![
                ("preemptor", Tier::Placeholder, 25.0),
                ("other-node", Tier::Cold, 30.0),
                ("second", Tier::Cold, 39.0),
            ]
        );
    }

    #[test]
    fn a_pod_created_long_before_the_preemption_did_not_cause_it() {
        let mut ledger = ReadyLedger::default();
        ledger.note_preemption(Preemption {
            node: "node-a".into(),
            noticed: 500.0,
        });
        let seen = ledger.observe(&[pod("old", 100.0, Some(520.0))], 530.0);
        assert_eq!(seen[0].tier, Tier::Cold);
    }
}
