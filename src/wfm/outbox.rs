//! The deployment-status outbox: every report the WFM must get, kept in the state file until
//! it is delivered.
//!
//! - Order: entries carry a sequence number and are delivered in that order, so each
//!   deployment's transitions arrive in the order they happened.
//! - Bound (`wfm.outbox_max`): when a new entry would exceed it, the oldest *superseded
//!   intermediate* entry is dropped — a `Pending`, `Installing` or `Removing` report of a
//!   deployment that has a later entry queued. Terminal reports (`Installed`, `Failed`,
//!   `Removed`) and the newest entry of each deployment are never dropped; if nothing can be
//!   dropped the outbox grows past the bound (with a warning) rather than lose them.
//! - Retried failures: a deployment whose last report was `Failed` is retried on every poll;
//!   its `Pending`/`Installing` reports are held back in memory until the attempt ends, and
//!   the whole attempt is dropped when it ends `Failed` with the same report as before (so
//!   a persistently failing deployment does not send three reports a minute forever).
//! - Entries live in the state file as raw JSON values: one corrupted entry is dropped with a
//!   journal line and the others are kept.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One queued report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub deployment_id: String,
    pub state: String,
    /// Unix seconds when it was queued.
    pub queued: u64,
    /// The DeploymentStatus body.
    pub body: Value,
}

/// The WFM part of the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WfmState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Value>,
    #[serde(default)]
    pub next_seq: u64,
    /// `sha256:…` of the capabilities document the WFM last accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
    /// Per deployment: `<state> <sha256 of body>` of the last terminal report queued.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_terminal: BTreeMap<String, String>,
    /// Reports of a retry in progress (see the module docs); not persisted.
    #[serde(skip)]
    pub held: BTreeMap<String, Vec<Entry>>,
}

impl WfmState {
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.next_seq == 0
            && self.capabilities.is_none()
            && self.last_terminal.is_empty()
    }
}

pub fn is_terminal(state: &str) -> bool {
    matches!(state, "Installed" | "Failed" | "Removed")
}

/// What [`enqueue`] did, for the caller's journal lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub queued: usize,
    pub coalesced: usize,
    pub over_bound: bool,
}

fn body_key(state: &str, body: &Value) -> String {
    format!(
        "{state} {}",
        crate::digest::Digest::of(body.to_string().as_bytes())
    )
}

/// Queues a report of `deployment_id` in `state` with `body`.
pub fn enqueue(
    w: &mut WfmState,
    deployment_id: &str,
    state: &str,
    body: Value,
    now: u64,
    max: usize,
) -> Enqueued {
    let entry = Entry {
        seq: 0,
        deployment_id: deployment_id.to_string(),
        state: state.to_string(),
        queued: now,
        body,
    };
    let retrying = w
        .last_terminal
        .get(deployment_id)
        .is_some_and(|k| k.starts_with("Failed "));
    if !is_terminal(state) && state != "Removing" && retrying {
        w.held
            .entry(deployment_id.to_string())
            .or_default()
            .push(entry);
        return Enqueued::default();
    }
    let mut batch = w.held.remove(deployment_id).unwrap_or_default();
    if is_terminal(state) {
        let key = body_key(state, &entry.body);
        if state == "Failed" && w.last_terminal.get(deployment_id) == Some(&key) {
            // The same failure again: the WFM already knows.
            return Enqueued::default();
        }
        if state == "Removed" {
            w.last_terminal.remove(deployment_id);
        } else {
            w.last_terminal.insert(deployment_id.to_string(), key);
        }
    }
    batch.push(entry);
    let mut out = Enqueued::default();
    for mut e in batch {
        e.seq = w.next_seq;
        w.next_seq += 1;
        match serde_json::to_value(&e) {
            Ok(v) => w.outbox.push(v),
            Err(_) => continue,
        }
        out.queued += 1;
    }
    while w.outbox.len() > max {
        match droppable(&w.outbox) {
            Some(i) => {
                w.outbox.remove(i);
                out.coalesced += 1;
            }
            None => {
                out.over_bound = true;
                break;
            }
        }
    }
    out
}

/// The oldest intermediate entry that a later entry of the same deployment supersedes.
fn droppable(outbox: &[Value]) -> Option<usize> {
    let key = |v: &Value| {
        (
            v["deployment_id"].as_str().unwrap_or("").to_string(),
            v["state"].as_str().unwrap_or("").to_string(),
        )
    };
    (0..outbox.len()).find(|&i| {
        let (d, s) = key(&outbox[i]);
        !is_terminal(&s) && outbox[i + 1..].iter().any(|v| key(v).0 == d)
    })
}

/// Parses the queued entries in delivery order, dropping (and returning a description of)
/// those that cannot be parsed.
pub fn entries(w: &mut WfmState) -> (Vec<Entry>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    w.outbox
        .retain(|v| match serde_json::from_value::<Entry>(v.clone()) {
            Ok(e) => {
                good.push(e);
                true
            }
            Err(err) => {
                bad.push(format!(
                    "{err} in {}",
                    crate::journal::ellipsize(&v.to_string(), 200)
                ));
                false
            }
        });
    good.sort_by_key(|e| e.seq);
    (good, bad)
}

/// Removes a delivered (or permanently refused) entry.
pub fn remove(w: &mut WfmState, seq: u64) {
    w.outbox.retain(|v| v["seq"].as_u64() != Some(seq));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(w: &mut WfmState, d: &str, s: &str) -> Enqueued {
        enqueue(w, d, s, json!({"d": d, "s": s}), 0, 8)
    }

    fn states(w: &mut WfmState) -> Vec<String> {
        entries(w)
            .0
            .iter()
            .map(|e| format!("{}:{}", e.deployment_id, e.state))
            .collect()
    }

    #[test]
    fn keeps_order_across_deployments() {
        let mut w = WfmState::default();
        for s in ["Pending", "Installing"] {
            q(&mut w, "a", s);
            q(&mut w, "b", s);
        }
        q(&mut w, "a", "Installed");
        q(&mut w, "b", "Failed");
        assert_eq!(
            states(&mut w),
            [
                "a:Pending",
                "b:Pending",
                "a:Installing",
                "b:Installing",
                "a:Installed",
                "b:Failed"
            ]
        );
    }

    #[test]
    fn bound_drops_superseded_intermediates_never_terminals() {
        let mut w = WfmState::default();
        // Flapping deployment: 4 cycles = 12 entries over a bound of 8.
        let mut coalesced = 0;
        for i in 0..4 {
            coalesced += q(&mut w, "a", "Pending").coalesced;
            coalesced += q(&mut w, "a", "Installing").coalesced;
            // Different errors so no retry is suppressed.
            let r = enqueue(&mut w, "a", "Installed", json!({ "i": i }), 0, 8);
            coalesced += r.coalesced;
        }
        let s = states(&mut w);
        assert_eq!(s.len(), 8, "{s:?}");
        assert_eq!(coalesced, 4);
        assert_eq!(s.iter().filter(|x| x.ends_with("Installed")).count(), 4);
        // The newest cycle is whole.
        assert_eq!(&s[5..], ["a:Pending", "a:Installing", "a:Installed"]);
        // Nothing droppable: terminals only, over the bound.
        let mut w = WfmState::default();
        let mut over = false;
        for i in 0..10 {
            over |= enqueue(&mut w, "a", "Installed", json!({ "i": i }), 0, 8).over_bound;
        }
        assert!(over);
        assert_eq!(states(&mut w).len(), 10);
    }

    #[test]
    fn a_retry_that_fails_the_same_way_again_sends_nothing() {
        let mut w = WfmState::default();
        q(&mut w, "a", "Pending");
        q(&mut w, "a", "Installing");
        q(&mut w, "a", "Failed");
        assert_eq!(states(&mut w).len(), 3);
        q(&mut w, "a", "Pending");
        q(&mut w, "a", "Installing");
        q(&mut w, "a", "Failed");
        assert_eq!(states(&mut w).len(), 3, "identical retry suppressed");
        q(&mut w, "a", "Pending");
        q(&mut w, "a", "Installing");
        q(&mut w, "a", "Installed");
        assert_eq!(
            &states(&mut w)[3..],
            ["a:Pending", "a:Installing", "a:Installed"]
        );
    }

    #[test]
    fn corrupted_entry_is_dropped_others_kept() {
        let mut w = WfmState::default();
        q(&mut w, "a", "Pending");
        w.outbox.push(json!({"seq": "x"}));
        q(&mut w, "a", "Installed");
        let (good, bad) = entries(&mut w);
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(w.outbox.len(), 2);
    }
}
