//! The OTLP/JSON form of an export request (`Content-Type: application/json`), per the OTLP
//! specification's JSON mapping: proto3 JSON with lowerCamelCase keys, enums as integers,
//! 64-bit integers (`fixed64`, `sfixed64`, `int64`) as decimal strings, and fields at their
//! default value left out. Non-finite doubles never occur (collectors reject them), so they
//! are sent as 0.

use super::proto::*;
use serde_json::{Map, Value as J, json};

/// The request as JSON bytes.
pub fn encode(req: &ExportMetricsServiceRequest) -> Vec<u8> {
    let rms: Vec<J> = req.resource_metrics.iter().map(resource_metrics).collect();
    json!({ "resourceMetrics": rms }).to_string().into_bytes()
}

fn num(f: f64) -> J {
    J::from(if f.is_finite() { f } else { 0.0 })
}

fn resource_metrics(rm: &ResourceMetrics) -> J {
    let mut m = Map::new();
    if let Some(r) = &rm.resource {
        m.insert(
            "resource".into(),
            json!({ "attributes": attributes(&r.attributes) }),
        );
    }
    let scopes: Vec<J> = rm.scope_metrics.iter().map(scope_metrics).collect();
    m.insert("scopeMetrics".into(), J::Array(scopes));
    if !rm.schema_url.is_empty() {
        m.insert("schemaUrl".into(), json!(rm.schema_url));
    }
    J::Object(m)
}

fn scope_metrics(sm: &ScopeMetrics) -> J {
    let mut m = Map::new();
    if let Some(s) = &sm.scope {
        let mut scope = Map::new();
        put_str(&mut scope, "name", &s.name);
        put_str(&mut scope, "version", &s.version);
        m.insert("scope".into(), J::Object(scope));
    }
    m.insert(
        "metrics".into(),
        J::Array(sm.metrics.iter().map(metric).collect()),
    );
    J::Object(m)
}

fn put_str(m: &mut Map<String, J>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn metric(metric: &Metric) -> J {
    let mut m = Map::new();
    put_str(&mut m, "name", &metric.name);
    put_str(&mut m, "description", &metric.description);
    put_str(&mut m, "unit", &metric.unit);
    match &metric.data {
        Some(Data::Gauge(g)) => {
            m.insert(
                "gauge".into(),
                json!({ "dataPoints": number_points(&g.data_points) }),
            );
        }
        Some(Data::Sum(s)) => {
            let mut sum = Map::new();
            sum.insert("dataPoints".into(), number_points(&s.data_points));
            if s.aggregation_temporality != 0 {
                sum.insert(
                    "aggregationTemporality".into(),
                    json!(s.aggregation_temporality),
                );
            }
            if s.is_monotonic {
                sum.insert("isMonotonic".into(), json!(true));
            }
            m.insert("sum".into(), J::Object(sum));
        }
        Some(Data::Histogram(h)) => {
            let points: Vec<J> = h.data_points.iter().map(histogram_point).collect();
            let mut hist = Map::new();
            hist.insert("dataPoints".into(), J::Array(points));
            if h.aggregation_temporality != 0 {
                hist.insert(
                    "aggregationTemporality".into(),
                    json!(h.aggregation_temporality),
                );
            }
            m.insert("histogram".into(), J::Object(hist));
        }
        None => {}
    }
    J::Object(m)
}

fn times(m: &mut Map<String, J>, start: u64, time: u64) {
    if start != 0 {
        m.insert("startTimeUnixNano".into(), json!(start.to_string()));
    }
    if time != 0 {
        m.insert("timeUnixNano".into(), json!(time.to_string()));
    }
}

fn number_points(points: &[NumberDataPoint]) -> J {
    J::Array(
        points
            .iter()
            .map(|p| {
                let mut m = Map::new();
                if !p.attributes.is_empty() {
                    m.insert("attributes".into(), attributes(&p.attributes));
                }
                times(&mut m, p.start_time_unix_nano, p.time_unix_nano);
                // A oneof member is always written, even at its default value.
                match p.value {
                    Some(Value::AsDouble(d)) => m.insert("asDouble".into(), num(d)),
                    Some(Value::AsInt(i)) => m.insert("asInt".into(), json!(i.to_string())),
                    None => None,
                };
                J::Object(m)
            })
            .collect(),
    )
}

fn histogram_point(p: &HistogramDataPoint) -> J {
    let mut m = Map::new();
    if !p.attributes.is_empty() {
        m.insert("attributes".into(), attributes(&p.attributes));
    }
    times(&mut m, p.start_time_unix_nano, p.time_unix_nano);
    if p.count != 0 {
        m.insert("count".into(), json!(p.count.to_string()));
    }
    // `optional` fields are written whenever present.
    for (k, v) in [("sum", p.sum), ("min", p.min), ("max", p.max)] {
        if let Some(v) = v {
            m.insert(k.into(), num(v));
        }
    }
    if !p.bucket_counts.is_empty() {
        let c: Vec<J> = p
            .bucket_counts
            .iter()
            .map(|c| json!(c.to_string()))
            .collect();
        m.insert("bucketCounts".into(), J::Array(c));
    }
    if !p.explicit_bounds.is_empty() {
        let b: Vec<J> = p.explicit_bounds.iter().map(|b| num(*b)).collect();
        m.insert("explicitBounds".into(), J::Array(b));
    }
    J::Object(m)
}

fn attributes(kvs: &[KeyValue]) -> J {
    J::Array(
        kvs.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Any::StringValue(s)) => json!({ "stringValue": s }),
                    Some(Any::BoolValue(b)) => json!({ "boolValue": b }),
                    Some(Any::IntValue(i)) => json!({ "intValue": i.to_string() }),
                    Some(Any::DoubleValue(d)) => json!({ "doubleValue": num(*d) }),
                    None => json!({}),
                };
                json!({ "key": kv.key, "value": value })
            })
            .collect(),
    )
}

/// The `partial_success` of a JSON `ExportMetricsServiceResponse`: (rejected points, message).
/// `None` when the body is not such a response or reports full success.
pub fn partial_success(body: &[u8]) -> Option<(i64, String)> {
    let v: J = serde_json::from_slice(body).ok()?;
    let ps = v.get("partialSuccess")?;
    let rejected = match ps.get("rejectedDataPoints") {
        Some(J::String(s)) => s.parse().ok()?,
        Some(J::Number(n)) => n.as_i64()?,
        _ => 0,
    };
    let message = ps
        .get("errorMessage")
        .and_then(J::as_str)
        .unwrap_or_default()
        .to_string();
    (rejected != 0 || !message.is_empty()).then_some((rejected, message))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::super::instruments::{Batch, Hist, int};
    use super::*;

    #[test]
    fn follows_the_otlp_json_mapping() {
        let mut b = Batch::new(1_700_000_000_000_000_001);
        b.sum(
            "c",
            "d",
            "By",
            true,
            vec![(vec![KeyValue::int("n", 1 << 60)], 5, int(u64::MAX))],
        );
        let mut h = Hist::default();
        h.record(0.2);
        b.histogram("h", "", "s", vec![(vec![], 5, &h)]);
        b.gauge("g", "", "1", vec![(vec![], 0, Value::AsDouble(f64::NAN))]);
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue::str("service.name", "x")],
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: b.metrics,
                }],
                schema_url: String::new(),
            }],
        };
        let v: J = serde_json::from_slice(&encode(&req)).unwrap();
        let m = &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        let sum = &m[0]["sum"];
        assert_eq!(sum["aggregationTemporality"], 2, "enums are integers");
        assert_eq!(sum["isMonotonic"], true);
        let p = &sum["dataPoints"][0];
        assert_eq!(
            p["asInt"],
            i64::MAX.to_string(),
            "64-bit integers are strings"
        );
        assert_eq!(p["startTimeUnixNano"], "5");
        assert_eq!(p["timeUnixNano"], "1700000000000000001");
        assert_eq!(
            p["attributes"][0]["value"]["intValue"],
            (1i64 << 60).to_string()
        );
        let hp = &m[1]["histogram"]["dataPoints"][0];
        assert_eq!(hp["count"], "1");
        assert_eq!(hp["bucketCounts"].as_array().unwrap().len(), 15);
        assert_eq!(hp["bucketCounts"][5], "1");
        assert_eq!(hp["explicitBounds"][0], 0.005);
        assert!(m[1].get("description").is_none(), "defaults are left out");
        let gp = &m[2]["gauge"]["dataPoints"][0];
        assert_eq!(gp["asDouble"], 0.0, "no NaN on the wire");
        assert!(gp.get("startTimeUnixNano").is_none());
        assert_eq!(
            v["resourceMetrics"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "x"
        );
    }

    #[test]
    fn reads_partial_success() {
        assert_eq!(
            partial_success(br#"{"partialSuccess":{"rejectedDataPoints":3}}"#),
            Some((3, String::new()))
        );
        assert_eq!(partial_success(br#"{"partialSuccess":{}}"#), None);
        assert_eq!(partial_success(b"<html>"), None);
    }
}
