//! The plan and the loop on generated DAGs: seeds, sources, models (some ephemeral), data tests
//! on one to three relations, unit tests, random selections and random failures. The checks
//! read the generated graph, not the plan: every selected node ends with exactly one result,
//! nothing starts before its selected ancestors and the tests that gate it have ended, and a
//! failure skips what depends on it.

use super::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Case {
    graph: Graph,
    kinds: HashMap<String, Kind>,
    selected: BTreeSet<String>,
    fails: HashSet<String>,
}

fn add(graph: &mut Graph, id: String, parents: Vec<String>) {
    for p in &parents {
        graph.children.get_mut(p).expect("parent exists").push(id.clone());
    }
    graph.children.insert(id.clone(), vec![]);
    graph.parents.insert(id.clone(), parents);
    graph.order.push(id);
}

/// A DAG in topological order: ids are numbered, parents come first.
fn generate(seed: u64) -> Case {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut graph = Graph::default();
    let mut kinds = HashMap::new();
    let mut relations: Vec<String> = vec![];
    let mut models: Vec<String> = vec![];
    let size = 4 + rng.below(30);
    for i in 0..size {
        let roll = rng.below(100);
        let (id, kind, parents) = if relations.is_empty() || roll < 12 {
            let kind = if rng.chance(50) { Kind::Relation } else { Kind::Other };
            let prefix = if kind == Kind::Relation { "seed" } else { "source" };
            (format!("{prefix}.{i:03}"), kind, vec![])
        } else if roll < 65 {
            let mut parents: BTreeSet<String> = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                parents.insert(relations[rng.below(relations.len())].clone());
            }
            let kind = if rng.chance(20) { Kind::Ephemeral } else { Kind::Relation };
            (format!("model.{i:03}"), kind, parents.into_iter().collect())
        } else if roll < 92 || models.is_empty() {
            // dbt tests read relations and sources, and through them ephemeral models.
            let mut parents: BTreeSet<String> = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                parents.insert(relations[rng.below(relations.len())].clone());
            }
            (format!("test.{i:03}"), Kind::Test, parents.into_iter().collect())
        } else {
            let model = models[rng.below(models.len())].clone();
            (format!("unit_test.{i:03}"), Kind::UnitTest { model: model.clone() }, vec![model])
        };
        if matches!(kind, Kind::Relation | Kind::Other | Kind::Ephemeral) {
            relations.push(id.clone());
        }
        if kind == Kind::Relation && id.starts_with("model.") {
            models.push(id.clone());
        }
        add(&mut graph, id.clone(), parents);
        kinds.insert(id, kind);
    }
    for c in graph.children.values_mut() {
        c.sort();
    }
    let everything = rng.chance(40);
    let selected = graph.order.iter().filter(|_| everything || rng.chance(60)).cloned().collect();
    let fails = graph.order.iter().filter(|_| rng.chance(12)).cloned().collect();
    Case { graph, kinds, selected, fails }
}

/// One run of a case: results by node, and when each node started and ended.
struct Trace {
    results: BTreeMap<String, Status>,
    started: HashMap<String, usize>,
    ended: HashMap<String, usize>,
}

fn execute(case: &Case, plan: &Plan, threads: usize) -> Result<Trace, Unfinished> {
    let clock = AtomicUsize::new(0);
    let started = Mutex::new(HashMap::new());
    let ended = Mutex::new(HashMap::new());
    let execute = |ready: &Ready| -> Vec<NodeResult> {
        let t = clock.fetch_add(1, Ordering::SeqCst);
        let out: Vec<NodeResult> = ready
            .members
            .iter()
            .map(|m| {
                started.lock().unwrap().insert(m.clone(), t);
                let status = match (&ready.blocked_by, case.fails.contains(m), &case.kinds[m]) {
                    (Some(_), _, _) => Status::Skipped,
                    (None, false, Kind::Relation) => Status::Success,
                    (None, false, _) => Status::Pass,
                    (None, true, Kind::Relation) => Status::Error,
                    (None, true, _) => Status::Fail,
                };
                result(m, status)
            })
            .collect();
        let t = clock.fetch_add(1, Ordering::SeqCst);
        for m in ready.members {
            ended.lock().unwrap().insert(m.clone(), t);
        }
        out
    };
    let results = run(plan, threads, false, &execute, &|_, _| {})?;
    let mut by_id = BTreeMap::new();
    for r in results {
        assert!(by_id.insert(r.unique_id.clone(), r.status).is_none(), "{} has two results", r.unique_id);
    }
    Ok(Trace { results: by_id, started: started.into_inner().unwrap(), ended: ended.into_inner().unwrap() })
}

fn result(id: &str, status: Status) -> NodeResult {
    NodeResult {
        unique_id: id.to_string(),
        status,
        message: String::new(),
        rows: None,
        seconds: 0.0,
        started_at: String::new(),
        completed_at: String::new(),
        thread: 0,
        compiled: None,
        relation: None,
        failures: None,
        code: None,
        diagnostic: None,
        response: None,
    }
}

/// Tests with one parent, grouped by it, as the runner batches them.
fn batches(case: &Case, plan: &Plan) -> Vec<Vec<String>> {
    let mut by_parent: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for id in &plan.order {
        if let (Kind::Test, [only]) = (&case.kinds[id], case.graph.parents[id].as_slice()) {
            by_parent.entry(only).or_default().push(id.clone());
        }
    }
    by_parent.into_values().filter(|g| g.len() > 1).collect()
}

fn check(seed: u64, case: &Case, plan: &Plan, trace: &Trace) {
    let executed =
        |id: &String| case.selected.contains(id) && matches!(case.kinds[id], Kind::Relation | Kind::Test | Kind::UnitTest { .. });
    let expected: BTreeSet<&String> = case.graph.order.iter().filter(|id| executed(id)).collect();
    let got: BTreeSet<&String> = trace.results.keys().collect();
    assert_eq!(got, expected, "seed {seed}: every selected node ends with exactly one result");
    for id in &expected.iter().copied().cloned().collect::<Vec<_>>() {
        // A unit test reads its model's parents, and runs before its model.
        let ancestors = match &case.kinds[id] {
            Kind::UnitTest { model } => case.graph.ancestors(model, None),
            _ => case.graph.ancestors(id, None),
        };
        let mut must_wait: Vec<&String> = ancestors.iter().filter(|a| executed(a) && case.kinds[*a] == Kind::Relation).collect();
        // dbt's test edges: a test gates a non-test node when all it reads is above the node.
        if !matches!(case.kinds[id], Kind::Test | Kind::UnitTest { .. }) {
            for t in case.graph.order.iter().filter(|t| executed(t) && case.kinds[*t] == Kind::Test) {
                let reads = &case.graph.parents[t];
                if !reads.is_empty() && reads.iter().all(|r| ancestors.contains(r)) {
                    must_wait.push(t);
                }
            }
        }
        // dbt runs a model's unit tests before it.
        for (u, k) in &case.kinds {
            if matches!(k, Kind::UnitTest { model } if model == id) && executed(u) {
                must_wait.push(u);
            }
        }
        for before in must_wait {
            assert!(trace.ended[before] < trace.started[id], "seed {seed}: {id} started before {before} ended\nplan: {:?}", plan.deps);
            if !trace.results[before].ok() {
                assert_eq!(trace.results[id], Status::Skipped, "seed {seed}: {id} ran although {before} did not succeed");
            }
        }
        // A relationships-style test never gates a node it reads.
        for p in case.graph.parents[id].iter().filter(|_| case.kinds[id] == Kind::Test) {
            assert!(!plan.deps.get(p).is_some_and(|d| d.contains(id)), "seed {seed}: {p} waits for its own test {id}");
        }
    }
}

#[test]
fn every_selected_node_ends_once_after_what_it_waits_for() {
    for seed in 1..=400 {
        let case = generate(seed);
        let kind = |id: &str| case.kinds.get(id).cloned().unwrap_or(Kind::Other);
        let plan = plan(&case.graph, &case.selected, &kind);
        let groups = batches(&case, &plan);
        let plan = plan.batched(groups);
        assert!(plan.cycle().is_empty(), "seed {seed}: the plan has a cycle: {:?}", plan.cycle());
        for threads in [1, 3] {
            let trace = execute(&case, &plan, threads).unwrap_or_else(|u| panic!("seed {seed}: unfinished {:?}", u.0));
            check(seed, &case, &plan, &trace);
        }
    }
}

/// The shape that deadlocked `kiln init`'s template: a relationships test from a model to its
/// parent, both selected, with a model downstream.
#[test]
fn relationships_test_gates_downstream_not_its_own_child() {
    let mut graph = Graph::default();
    add(&mut graph, "seed.customers".into(), vec![]);
    add(&mut graph, "model.orders".into(), vec!["seed.customers".into()]);
    add(&mut graph, "test.relationships".into(), vec!["model.orders".into(), "seed.customers".into()]);
    add(&mut graph, "model.summary".into(), vec!["model.orders".into()]);
    let kind = |id: &str| if id.starts_with("test.") { Kind::Test } else { Kind::Relation };
    let plan = plan(&graph, &graph.order.iter().cloned().collect(), &kind);
    assert_eq!(plan.deps["model.orders"], vec!["seed.customers"]);
    assert_eq!(plan.deps["model.summary"], vec!["model.orders", "test.relationships"]);
}

/// `run -s a c` over `a -> b -> c` (b not selected): c still waits for a.
#[test]
fn waits_through_unselected_nodes() {
    let mut graph = Graph::default();
    add(&mut graph, "model.a".into(), vec![]);
    add(&mut graph, "model.b".into(), vec!["model.a".into()]);
    add(&mut graph, "model.c".into(), vec!["model.b".into()]);
    let plan = plan(&graph, &["model.a".to_string(), "model.c".to_string()].into(), &|_| Kind::Relation);
    assert_eq!(plan.deps["model.c"], vec!["model.a"]);
}

/// A plan with a cycle ends as an error before anything runs.
#[test]
fn a_cyclic_plan_is_an_error_not_a_quiet_run() {
    let plan = Plan {
        order: vec!["a".into(), "b".into()],
        units: vec!["a".into(), "b".into()],
        batches: HashMap::new(),
        deps: [("a".to_string(), vec!["b".to_string()]), ("b".to_string(), vec!["a".to_string()])].into(),
    };
    let ran = AtomicUsize::new(0);
    let out = run(
        &plan,
        2,
        false,
        &|_| {
            ran.fetch_add(1, Ordering::SeqCst);
            vec![]
        },
        &|_, _| {},
    );
    assert_eq!(out.map(|_| ()).unwrap_err().0, vec!["a", "b"]);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// A panic while executing a node fails that node (and skips what depends on it); the run
/// ends with every other result.
#[test]
fn a_panicking_node_fails_alone() {
    let plan = Plan {
        order: vec!["a".into(), "b".into(), "c".into()],
        units: vec!["a".into(), "b".into(), "c".into()],
        batches: HashMap::new(),
        deps: [("a".to_string(), vec![]), ("b".to_string(), vec!["a".to_string()]), ("c".to_string(), vec![])].into(),
    };
    let execute = |r: &Ready| {
        if r.unit == "a" {
            panic!("boom");
        }
        let status = if r.blocked_by.is_some() { Status::Skipped } else { Status::Success };
        vec![result(r.unit, status)]
    };
    let out = run(&plan, 2, false, &execute, &|_, _| {}).map_err(|u| u.0).expect("the run ends");
    let status: Vec<(&str, Status)> = out.iter().map(|r| (r.unique_id.as_str(), r.status)).collect();
    assert_eq!(status, vec![("a", Status::Error), ("b", Status::Skipped), ("c", Status::Success)]);
    assert!(out[0].message.contains("boom") && out[0].message.contains("E900"), "{}", out[0].message);
}

/// An executor that returns no result for a unit makes the run an error.
#[test]
fn a_node_without_a_result_is_an_error() {
    let plan = Plan { order: vec!["a".into()], units: vec!["a".into()], batches: HashMap::new(), deps: [("a".to_string(), vec![])].into() };
    let out = run(&plan, 1, false, &|_| vec![], &|_, _| {});
    assert_eq!(out.map(|_| ()).unwrap_err().0, vec!["a"]);
}
