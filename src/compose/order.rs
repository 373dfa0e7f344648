//! Dependency order: services after what they depend on, and the cycle when there is none.
//!
//! Used by [`super::project`] to order services for creation and by [`mod@super::plan`] to
//! remove a project's containers dependents-first. Ties are broken by name so the order, and
//! therefore every plan, is the same on every run.

use super::error::ComposeError;
use std::collections::{BTreeMap, BTreeSet};

/// Orders services so that each comes after everything it depends on; ties are broken by
/// name so the order is stable. A cycle is reported with its members in order.
pub fn dependency_order(
    graph: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, ComposeError> {
    let mut order = Vec::with_capacity(graph.len());
    let mut placed = BTreeSet::new();
    while order.len() < graph.len() {
        let ready: Vec<&String> = graph
            .iter()
            .filter(|(name, deps)| {
                !placed.contains(*name) && deps.iter().all(|d| placed.contains(d))
            })
            .map(|(name, _)| name)
            .collect();
        if ready.is_empty() {
            return Err(ComposeError::DependencyCycle {
                cycle: find_cycle(graph, &placed),
            });
        }
        for name in ready {
            placed.insert(name.clone());
            order.push(name.clone());
        }
    }
    Ok(order)
}

/// Walks dependencies from the first unplaced service until a service repeats.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    placed: &BTreeSet<String>,
) -> Vec<String> {
    let Some(start) = graph.keys().find(|k| !placed.contains(*k)) else {
        return Vec::new();
    };
    let mut path: Vec<String> = vec![start.clone()];
    loop {
        let current = &path[path.len() - 1];
        // Every unplaced service has at least one unplaced dependency, or it would be ready.
        let next = graph
            .get(current)
            .and_then(|deps| deps.iter().find(|d| !placed.contains(*d)))
            .cloned();
        let Some(next) = next else { return path };
        if let Some(i) = path.iter().position(|p| *p == next) {
            let mut cycle = path.split_off(i);
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(k, deps)| (k.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn orders_dependencies_first_with_ties_by_name() {
        let g = graph(&[
            ("web", &["db", "cache"]),
            ("db", &[]),
            ("cache", &[]),
            ("worker", &["db"]),
        ]);
        assert_eq!(
            dependency_order(&g).unwrap(),
            ["cache", "db", "web", "worker"]
        );
    }

    #[test]
    fn names_a_cycle_in_order() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        let e = dependency_order(&g).unwrap_err();
        assert_eq!(
            e,
            ComposeError::DependencyCycle {
                cycle: vec!["a".into(), "b".into(), "c".into(), "a".into()]
            }
        );
    }

    #[test]
    fn names_a_self_dependency() {
        let e = dependency_order(&graph(&[("a", &["a"])])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "services depend on each other in a cycle: a -> a"
        );
    }

    #[test]
    fn names_only_the_cycle_not_the_path_into_it() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])]);
        let e = dependency_order(&g).unwrap_err();
        assert_eq!(
            e.to_string(),
            "services depend on each other in a cycle: b -> c -> b"
        );
    }
}
