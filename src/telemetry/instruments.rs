//! The agent's own counters (updated by the reconcile loop through narrow hooks) and the
//! helpers that turn readings into OTLP metrics. Everything is cumulative: a value only ever
//! grows from the agent's start, so an export that never arrived is made good by the next
//! one, and nothing has to be queued while the collector is away.

use super::proto::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile-duration histogram buckets.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Distinct error codes tracked; later codes are counted under `other` (memory stays bounded
/// whatever a peer sends).
pub const MAX_ERROR_CODES: usize = 64;

/// A cumulative explicit-bucket histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub counts: [u64; DURATION_BOUNDS.len() + 1],
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: [0; DURATION_BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: 0.0,
        }
    }
}

impl Hist {
    pub fn record(&mut self, v: f64) {
        let i = DURATION_BOUNDS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(DURATION_BOUNDS.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// What the agent counts about itself. Updated by `reconcile` and the daemon loop.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    /// Reconcile durations by result (the reconcile count is the histogram's count).
    pub reconciles: BTreeMap<&'static str, Hist>,
    /// Desired-state polls by result: (polls, bytes of documents received).
    pub polls: BTreeMap<&'static str, (u64, u64)>,
    /// Errors by code (`ERR_…`).
    pub errors: BTreeMap<String, u64>,
}

impl AgentMetrics {
    /// One reconcile pass ended with `result` after `took`.
    pub fn reconcile(&mut self, result: &'static str, took: Duration) {
        self.reconciles
            .entry(result)
            .or_default()
            .record(took.as_secs_f64());
    }

    /// One desired-state poll ended with `result` (`unchanged`, `changed`, `unreachable`,
    /// `invalid`) having received `bytes` of documents.
    pub fn poll(&mut self, result: &'static str, bytes: u64) {
        let e = self.polls.entry(result).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// An error with a stable code was reported (journal, status).
    pub fn error(&mut self, code: &str) {
        if code.is_empty() {
            return;
        }
        let key = if self.errors.contains_key(code) || self.errors.len() < MAX_ERROR_CODES {
            code
        } else {
            "other"
        };
        *self.errors.entry(key.to_string()).or_default() += 1;
    }
}

/// Builds metrics that share one timestamp.
pub struct Batch {
    pub now: u64,
    pub metrics: Vec<Metric>,
}

/// One number data point: attributes, start time (0 for gauges), value.
pub type Point = (Vec<KeyValue>, u64, Value);

impl Batch {
    pub fn new(now: u64) -> Batch {
        Batch {
            now,
            metrics: Vec::new(),
        }
    }

    fn points(&self, points: Vec<Point>) -> Vec<NumberDataPoint> {
        points
            .into_iter()
            .map(|(attributes, start, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                value: Some(value),
            })
            .collect()
    }

    fn push(&mut self, name: &str, desc: &str, unit: &str, data: Data) {
        self.metrics.push(Metric {
            name: name.into(),
            description: desc.into(),
            unit: unit.into(),
            data: Some(data),
        });
    }

    /// A cumulative Sum (a Counter when `monotonic`, else an UpDownCounter). No points, no
    /// metric: collectors refuse empty ones.
    pub fn sum(&mut self, name: &str, desc: &str, unit: &str, monotonic: bool, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(points);
        self.push(
            name,
            desc,
            unit,
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
                is_monotonic: monotonic,
            }),
        );
    }

    pub fn gauge(&mut self, name: &str, desc: &str, unit: &str, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(points);
        self.push(name, desc, unit, Data::Gauge(Gauge { data_points }));
    }

    pub fn histogram(
        &mut self,
        name: &str,
        desc: &str,
        unit: &str,
        points: Vec<(Vec<KeyValue>, u64, &Hist)>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(attributes, start, h)| HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.to_vec(),
                explicit_bounds: DURATION_BOUNDS.to_vec(),
                min: (h.count > 0).then_some(h.min),
                max: (h.count > 0).then_some(h.max),
            })
            .collect();
        self.push(
            name,
            desc,
            unit,
            Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
            }),
        );
    }
}

/// The attributes of a point that has one: `key` = `value`.
pub fn attr(key: &str, value: impl Into<String>) -> Vec<KeyValue> {
    vec![KeyValue::str(key, value)]
}

/// `u64` → `Value::AsInt`, saturating.
pub fn int(v: u64) -> Value {
    Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Hist::default();
        for v in [0.001, 0.005, 0.3, 1000.0] {
            h.record(v);
        }
        assert_eq!(h.count, 4);
        assert_eq!(h.counts[0], 2, "bounds are inclusive upper bounds");
        assert_eq!(h.counts[6], 1);
        assert_eq!(h.counts[DURATION_BOUNDS.len()], 1, "overflow bucket");
        assert_eq!(h.counts.iter().sum::<u64>(), h.count);
        assert_eq!((h.min, h.max), (0.001, 1000.0));
    }

    #[test]
    fn error_codes_are_bounded() {
        let mut m = AgentMetrics::default();
        for i in 0..200 {
            m.error(&format!("ERR_{i}"));
        }
        m.error("ERR_0");
        assert_eq!(m.errors.len(), MAX_ERROR_CODES + 1);
        assert_eq!(m.errors["ERR_0"], 2);
        assert_eq!(m.errors["other"], 200 - MAX_ERROR_CODES as u64);
    }
}
