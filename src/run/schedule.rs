//! The build plan and the parallel loop that carries it out. Pure: the runner says what each
//! node is and how to execute it; nothing here touches an engine or prints.
//!
//! The plan follows dbt-core's graph for `build` (`Linker.add_test_edges` and
//! `Graph.get_subset_graph`):
//! - an executed node waits for its nearest executed ancestors, looking through every node the
//!   run does not execute (ephemeral models, unselected models, sources), so `run -s a c` over
//!   `a -> b -> c` still builds `c` after `a`;
//! - a data test gates a node when every node the test depends on is a strict ancestor of it:
//!   a `relationships` test from `orders` to `customers` gates what is downstream of both, never
//!   `orders` itself;
//! - a unit test waits for its model's parents, and the model waits for its unit tests (dbt runs
//!   unit tests before building the model); a model's unit tests also wait for the data tests
//!   that gate the model.
//!
//! The plan is checked to be acyclic before anything runs, and the loop checks that every
//! planned node ended with exactly one result: a run that would end otherwise is an internal
//! error, never a quiet success.

use super::runner::{NodeResult, Status};
use crate::graph::Graph;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex};

/// What the plan needs to know of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Executed when selected: seeds and non-ephemeral models.
    Relation,
    /// Inlined into its children, never executed.
    Ephemeral,
    /// A data test.
    Test,
    /// A unit test of `model`.
    UnitTest { model: String },
    /// Never executed by this run: sources, exposures, analyses, snapshots.
    Other,
}

impl Kind {
    fn executed(&self) -> bool {
        matches!(self, Kind::Relation | Kind::Test | Kind::UnitTest { .. })
    }
}

/// The executed nodes and what each waits for.
#[derive(Debug, Default)]
pub struct Plan {
    /// Executed nodes in topological order (ties by unique id).
    pub order: Vec<String>,
    /// Units of work, in `order`: a node, or a batch of data tests named by its first member.
    pub units: Vec<String>,
    /// The members of each batch (a unit that is not a batch is its own only member).
    pub batches: HashMap<String, Vec<String>>,
    /// For each unit, the units it waits for (sorted, without duplicates).
    pub deps: HashMap<String, Vec<String>>,
}

impl Plan {
    /// The nodes `unit` stands for.
    pub fn members<'a>(&'a self, unit: &'a String) -> &'a [String] {
        self.batches.get(unit).map_or(std::slice::from_ref(unit), Vec::as_slice)
    }

    /// Runs the members of each group (two or more nodes that share their dependencies, in
    /// `order`) as one unit, named by its first member.
    pub fn batched(mut self, groups: Vec<Vec<String>>) -> Plan {
        let leader_of: HashMap<String, String> = groups.iter().flat_map(|g| g.iter().map(|m| (m.clone(), g[0].clone()))).collect();
        let lead = |id: &String| leader_of.get(id).unwrap_or(id).clone();
        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        for (id, ds) in std::mem::take(&mut self.deps) {
            let unit = deps.entry(lead(&id)).or_default();
            unit.extend(ds.iter().map(lead));
        }
        for (unit, ds) in &mut deps {
            ds.sort();
            ds.dedup();
            ds.retain(|d| d != unit);
        }
        self.deps = deps;
        self.units = self.order.iter().filter(|id| lead(id) == **id).cloned().collect();
        self.batches = groups.into_iter().map(|g| (g[0].clone(), g)).collect();
        self
    }

    /// The units on a dependency cycle, if any (none when the plan is sound).
    pub fn cycle(&self) -> Vec<String> {
        let mut waiting: HashMap<&str, usize> = self.units.iter().map(|u| (u.as_str(), self.deps[u].len())).collect();
        let children = self.children();
        let mut ready: Vec<&str> = waiting.iter().filter(|(_, n)| **n == 0).map(|(u, _)| *u).collect();
        while let Some(u) = ready.pop() {
            waiting.remove(u);
            for c in children.get(u).into_iter().flatten() {
                if let Some(n) = waiting.get_mut(c) {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(c);
                    }
                }
            }
        }
        let mut left: Vec<String> = waiting.into_keys().map(str::to_string).collect();
        left.sort();
        left
    }

    fn children(&self) -> HashMap<&str, Vec<&str>> {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for u in &self.units {
            for d in &self.deps[u] {
                children.entry(d.as_str()).or_default().push(u.as_str());
            }
        }
        children
    }
}

/// The plan of a run over `selected`.
pub fn plan(graph: &Graph, selected: &BTreeSet<String>, kind: &dyn Fn(&str) -> Kind) -> Plan {
    let kinds: HashMap<&str, Kind> = graph.order.iter().map(|id| (id.as_str(), kind(id))).collect();
    let kind_of = |id: &str| kinds.get(id).unwrap_or(&Kind::Other);
    let order: Vec<String> = graph.order.iter().filter(|id| selected.contains(*id) && kind_of(id).executed()).cloned().collect();
    let in_run: HashSet<&str> = order.iter().map(String::as_str).collect();
    let parents = |id: &str| graph.parents.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let children = |id: &str| graph.children.get(id).map(Vec::as_slice).unwrap_or(&[]);
    // The nearest executed ancestors of `start`, looking through what the run does not execute.
    let executed_above = |start: &[String]| -> Vec<String> {
        let mut found = BTreeSet::new();
        let mut stack: Vec<&str> = start.iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if in_run.contains(p) {
                found.insert(p.to_string());
            } else {
                stack.extend(parents(p).iter().map(String::as_str));
            }
        }
        found.into_iter().collect()
    };
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    let mut unit_tests_of: HashMap<&str, Vec<&String>> = HashMap::new();
    for id in &order {
        let waits = match kind_of(id) {
            Kind::UnitTest { model } => {
                unit_tests_of.entry(model.as_str()).or_default().push(id);
                executed_above(parents(model))
            }
            _ => executed_above(parents(id)),
        };
        deps.insert(id.clone(), waits);
    }
    for (model, tests) in &unit_tests_of {
        if let Some(ds) = deps.get_mut(*model) {
            ds.extend(tests.iter().map(|t| (*t).clone()));
        }
    }
    let position: HashMap<&str, usize> = graph.order.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut below = Descendants::new(graph);
    for test in order.iter().filter(|id| *kind_of(id) == Kind::Test) {
        let tested = parents(test);
        // Every gated node is below the deepest tested node: walk from there.
        let Some(deepest) = tested.iter().max_by_key(|p| position.get(p.as_str())) else { continue };
        let mut stack: Vec<&str> = children(deepest).iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        while let Some(c) = stack.pop() {
            if !seen.insert(c) || matches!(kind_of(c), Kind::Test | Kind::UnitTest { .. }) {
                continue;
            }
            let gated = tested.iter().all(|t| t == deepest || below.of(t).contains(c));
            if gated && in_run.contains(c) {
                // What is below `c` waits for `c`, so the edge to `c` is enough.
                deps.get_mut(c).expect("in run").push(test.clone());
                for u in unit_tests_of.get(c).into_iter().flatten() {
                    deps.get_mut(*u).expect("in run").push(test.clone());
                }
            } else {
                stack.extend(children(c).iter().map(String::as_str));
            }
        }
    }
    for ds in deps.values_mut() {
        ds.sort();
        ds.dedup();
    }
    Plan { units: order.clone(), order, batches: HashMap::new(), deps }
}

/// Strict descendants of nodes, computed once per node.
struct Descendants<'a> {
    graph: &'a Graph,
    memo: HashMap<&'a str, HashSet<&'a str>>,
}

impl<'a> Descendants<'a> {
    fn new(graph: &'a Graph) -> Self {
        Descendants { graph, memo: HashMap::new() }
    }

    fn of(&mut self, id: &'a str) -> &HashSet<&'a str> {
        let graph = self.graph;
        self.memo.entry(id).or_insert_with(|| {
            let mut out = HashSet::new();
            let mut stack = vec![id];
            while let Some(n) = stack.pop() {
                for c in graph.children.get(n).into_iter().flatten() {
                    if out.insert(c.as_str()) {
                        stack.push(c.as_str());
                    }
                }
            }
            out
        })
    }
}

/// A unit handed to the executor.
pub struct Ready<'a> {
    pub unit: &'a str,
    pub members: &'a [String],
    /// The node whose failure keeps this unit from running, with how it ended: the failed node
    /// at the root, when the unit's own dependency was skipped because of it.
    pub blocked_by: Option<(&'a str, Status)>,
    /// `--fail-fast` stopped the run.
    pub stopped: bool,
    /// The worker thread (0-based), for `run_results.json`.
    pub thread: usize,
}

/// Nodes that were planned but never got a result: the plan or the loop is wrong.
#[derive(Debug)]
pub struct Unfinished(pub Vec<String>);

struct Queue {
    ready: VecDeque<String>,
    waiting: HashMap<String, usize>,
    results: HashMap<String, NodeResult>,
    /// For a node skipped because of a failure, the failed node at the root.
    cause: HashMap<String, String>,
    running: usize,
    finished: usize,
    stop: bool,
}

/// Runs the plan's units on `threads` threads, each once its dependencies have ended.
/// `execute` returns one result per member. `finished` is called for each result in the order
/// results arrive, with its 1-based position among them. A failed node's dependents are still
/// handed to `execute`, with `blocked_by` set, so they end with a result (skipped).
pub fn run(
    plan: &Plan,
    threads: usize,
    fail_fast: bool,
    execute: &(dyn Fn(&Ready) -> Vec<NodeResult> + Sync),
    finished: &(dyn Fn(&NodeResult, usize) + Sync),
) -> Result<Vec<NodeResult>, Unfinished> {
    let cycle = plan.cycle();
    if !cycle.is_empty() {
        return Err(Unfinished(cycle));
    }
    let queue = Mutex::new(Queue {
        ready: plan.units.iter().filter(|u| plan.deps[*u].is_empty()).cloned().collect(),
        waiting: plan.deps.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
        results: HashMap::new(),
        cause: HashMap::new(),
        running: 0,
        finished: 0,
        stop: false,
    });
    let shared = Workers { plan, queue, cv: Condvar::new(), children: plan.children(), fail_fast, execute, finished };
    let threads = threads.clamp(1, 64).min(plan.units.len().max(1));
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let shared = &shared;
            scope.spawn(move || shared.work(thread));
        }
    });
    let mut q = shared.queue.into_inner().unwrap_or_else(|e| e.into_inner());
    let missing: Vec<String> = plan.order.iter().filter(|id| !q.results.contains_key(*id)).cloned().collect();
    if !missing.is_empty() {
        return Err(Unfinished(missing));
    }
    Ok(plan.order.iter().filter_map(|id| q.results.remove(id)).collect())
}

/// A unit a worker took, with what it needs to know before executing it.
struct Taken {
    unit: String,
    blocked_by: Option<(String, Status)>,
    stopped: bool,
}

/// What the worker threads share.
struct Workers<'a> {
    plan: &'a Plan,
    queue: Mutex<Queue>,
    cv: Condvar,
    children: HashMap<&'a str, Vec<&'a str>>,
    fail_fast: bool,
    execute: &'a (dyn Fn(&Ready) -> Vec<NodeResult> + Sync),
    finished: &'a (dyn Fn(&NodeResult, usize) + Sync),
}

impl Workers<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes ready units until nothing is ready and nothing is running.
    fn work(&self, thread: usize) {
        while let Some(Taken { unit, blocked_by, stopped }) = self.next() {
            let members = self.plan.members(&unit);
            let blocked = blocked_by.as_ref().map(|(id, st)| (id.as_str(), *st));
            let ready = Ready { unit: &unit, members, blocked_by: blocked, stopped, thread };
            // A bug in kiln while running a node fails that node, not the run: without this the
            // thread would die holding a unit and the others would wait for it forever.
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.execute)(&ready)))
                .unwrap_or_else(|panic| members.iter().map(|m| crashed(m, &*panic, thread)).collect());
            self.done(&unit, results, blocked_by.map(|(root, _)| root));
        }
    }

    fn next(&self) -> Option<Taken> {
        let mut q = self.lock();
        loop {
            if let Some(unit) = q.ready.pop_front() {
                q.running += 1;
                let blocked_by = blocker(self.plan, &q, &unit);
                return Some(Taken { unit, blocked_by, stopped: q.stop });
            }
            if q.running == 0 {
                return None;
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records a unit's results and readies the units that waited only for it.
    fn done(&self, unit: &str, results: Vec<NodeResult>, root: Option<String>) {
        let mut q = self.lock();
        for r in results {
            if self.fail_fast && matches!(r.status, Status::Error | Status::Fail) {
                q.stop = true;
            }
            if let (Status::Skipped, Some(root)) = (r.status, &root) {
                q.cause.insert(r.unique_id.clone(), root.clone());
            }
            q.finished += 1;
            (self.finished)(&r, q.finished);
            q.results.insert(r.unique_id.clone(), r);
        }
        q.running -= 1;
        for c in self.children.get(unit).into_iter().flatten() {
            if let Some(w) = q.waiting.get_mut(*c) {
                *w -= 1;
                if *w == 0 {
                    q.ready.push_back((*c).to_string());
                }
            }
        }
        self.cv.notify_all();
    }
}

/// The result of a node whose execution panicked (a bug in kiln).
fn crashed(id: &str, panic: &(dyn std::any::Any + Send), thread: usize) -> NodeResult {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    NodeResult {
        unique_id: id.to_string(),
        status: Status::Error,
        message: format!("internal error (E900) while running this node: {what}; this is a bug in kiln, please report it"),
        rows: None,
        seconds: 0.0,
        started_at: now.clone(),
        completed_at: now,
        thread,
        compiled: None,
        relation: None,
        failures: None,
        code: Some(crate::diagnostics::Code::Internal),
        diagnostic: None,
        response: None,
    }
}

/// The failed node (at the root) that keeps `unit` from running, if any.
fn blocker(plan: &Plan, q: &Queue, unit: &String) -> Option<(String, Status)> {
    let failed = plan.deps[unit].iter().flat_map(|d| plan.members(d)).find(|m| q.results.get(*m).is_some_and(|r| !r.status.ok()))?;
    let root = q.cause.get(failed).unwrap_or(failed);
    Some((root.clone(), q.results.get(root).map_or(Status::Skipped, |r| r.status)))
}

#[cfg(test)]
mod tests;
