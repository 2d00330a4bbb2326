//! The analysis on a scratch DataFusion session: each input is registered as an empty relation
//! under its own name, parents first, and each model's compiled SQL is planned over them.

mod report;

use super::{Analysis, ColumnRead, Columns, Input, NodeLineage, calls, position};
use crate::adapter::functions::Catalog;
use crate::diagnostics::{Code, Diagnostic};
use crate::engine::RelationName;
use crate::engine::datafusion::DataFusionEngine;
use crate::engine::datafusion::analysis::{Derivation, Lineage, PlanProblem, Planned, Planner, Read, TypeRules};
use crate::engine::datafusion::types;
use crate::parse::{Node, ResourceType};
use crate::project::typed::{HardDeletes, NodeConfig, SnapshotStrategy, StaticAnalysis};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What analysis knows of one relation.
#[derive(Clone, Debug)]
enum Inferred {
    /// `complete`: every column is listed (not a source's partial YAML).
    Known {
        schema: SchemaRef,
        complete: bool,
    },
    Unknown(String),
}

/// What planning one model gave.
struct PlannedNode {
    id: String,
    inferred: Inferred,
    found: Vec<Diagnostic>,
    lineage: Option<NodeLineage>,
}

struct State<'a> {
    input: &'a Input<'a>,
    engine: DataFusionEngine,
    /// What is known so far; read (never written) while a level of models is planned.
    inferred: HashMap<String, Inferred>,
    /// File sources: unique id -> (location, format).
    files: HashMap<String, (String, Option<String>)>,
    /// (database, schema, name) -> unique id, of every relation a model may read.
    relations: HashMap<(String, String, String), String>,
    /// The functions of the target's dialect, when kiln has them.
    catalog: Option<&'static Catalog>,
    /// Functions the project creates itself (lower case): never unknown.
    created: HashSet<String>,
    /// Tables and views the project creates itself (hooks, operations; lower case).
    created_relations: HashSet<String>,
    /// What every node's analysis depends on besides its own SQL and inputs (for the memo).
    context: u64,
}

/// One model's result in [`super::Memo`], and what it was computed from.
pub(crate) struct Remembered {
    key: u64,
    inferred: Inferred,
    lineage: Option<NodeLineage>,
}

impl super::Memo {
    /// The result remembered for `id` under `key`; else `compute`'s, remembered when it says
    /// to keep it.
    fn remembered(
        &self,
        id: &str,
        key: u64,
        compute: impl FnOnce() -> (Inferred, Option<NodeLineage>, bool),
    ) -> (Inferred, Option<NodeLineage>) {
        let models = || self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = models().get(id).filter(|m| m.key == key) {
            return (hit.inferred.clone(), hit.lineage.clone());
        }
        let (inferred, lineage, keep) = compute();
        if keep {
            models().insert(id.to_string(), Remembered { key, inferred: inferred.clone(), lineage: lineage.clone() });
        }
        (inferred, lineage)
    }
}

/// What every node's analysis depends on besides its own SQL, config and inputs.
fn context_key(input: &Input, created: &HashSet<String>, created_relations: &HashSet<String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    let sorted = |set: &HashSet<String>| set.iter().cloned().collect::<BTreeSet<String>>();
    (sorted(created), sorted(created_relations)).hash(&mut h);
    (format!("{:?}", input.target.adapter), &input.target.database, &input.target.schema).hash(&mut h);
    (input.queries_answered, input.mode.map(|m| m as u8), input.check.is_some()).hash(&mut h);
    h.finish()
}

pub fn run(input: &Input) -> Analysis {
    let target = input.target;
    let engine = match DataFusionEngine::scratch(
        &target.database,
        &target.schema,
        target.adapter.dialect.datafusion_name(),
        target.adapter.semantics,
    ) {
        Ok(engine) => engine,
        Err(e) => {
            let d = Diagnostic::warning(Code::Untyped, format!("static analysis could not start: {}", e.message));
            return Analysis { diagnostics: vec![d], ..Analysis::default() };
        }
    };
    let relations = input
        .manifest
        .sources
        .keys()
        .chain(input.manifest.nodes.values().filter(|n| n.is_refable()).map(|n| &n.unique_id))
        .filter_map(|id| {
            let r = relation_of(input, id)?;
            Some(((r.database, r.schema, r.name), id.clone()))
        })
        .collect();
    let catalog = Catalog::of(target.adapter.dialect);
    if let Some(catalog) = catalog {
        engine.register_catalog(catalog);
    }
    let (mut created, mut created_relations) = (HashSet::new(), HashSet::new());
    for text in input.project.files.iter().map(|f| &f.text).chain(input.project.packages.iter().map(|p| &p.config.source.text)) {
        for (kind, name) in calls::created(text) {
            if kind == "function" {
                created.insert(name)
            } else {
                created_relations.insert(name)
            };
        }
    }
    let context = context_key(input, &created, &created_relations);
    let mut state = State {
        input,
        engine,
        inferred: HashMap::new(),
        files: file_sources(input),
        relations,
        catalog,
        created,
        created_relations,
        context,
    };
    let models: Vec<&Node> = input
        .graph
        .order
        .iter()
        .filter(|id| input.compiled.contains_key(*id))
        .filter_map(|id| input.manifest.nodes.get(id))
        .filter(|n| super::analyzed(n))
        .collect();
    // Seeds and sources first, then the models level by level: a level reads only what the
    // levels before it registered, so its models are planned in parallel.
    let is_input = |p: &String| {
        input.manifest.sources.contains_key(p) || input.manifest.nodes.get(p).is_some_and(|n| n.resource_type == ResourceType::Seed)
    };
    let inputs: BTreeSet<String> =
        models.iter().flat_map(|n| state.relation_parents(&n.unique_id)).chain(input.inputs.iter().cloned()).filter(is_input).collect();
    let found: Vec<(String, Inferred)> = inputs.par_iter().map(|id| (id.clone(), state.input_relation(id))).collect();
    state.publish(found);
    let mut analysis = Analysis::default();
    plan_levels(&mut state, &models, &mut analysis);
    for (id, found) in state.unit_tests() {
        analysis.found(&id, [found]);
    }
    analysis.columns = state.inferred.into_iter().map(|(id, i)| (id, columns(&i))).collect();
    analysis
}

/// Plans `models` level by level, each level in parallel (one planner per thread), publishing
/// what a level found before the next, with their lineage and findings, into `analysis`.
fn plan_levels(state: &mut State, models: &[&Node], analysis: &mut Analysis) {
    // One planner per thread for every level (a planner copies the session's state).
    let planners: Vec<std::sync::Mutex<Option<Planner>>> = (0..rayon::current_num_threads()).map(|_| Default::default()).collect();
    for level in levels(state, models) {
        let results: Vec<PlannedNode> = level
            .par_iter()
            .map(|n| {
                let mut slot =
                    planners[rayon::current_thread_index().unwrap_or(0) % planners.len()].lock().unwrap_or_else(|e| e.into_inner());
                let planner = slot.get_or_insert_with(|| state.engine.planner());
                let mut found = Vec::new();
                let (inferred, lineage) = state.model(planner, n, &mut found);
                PlannedNode { id: n.unique_id.clone(), inferred, found, lineage }
            })
            .collect();
        let mut known = Vec::with_capacity(results.len());
        for planned in results {
            if let Some(l) = planned.lineage {
                analysis.lineage.insert(planned.id.clone(), l);
            }
            analysis.found(&planned.id, planned.found);
            known.push((planned.id, planned.inferred));
        }
        state.publish(known);
    }
}

/// The relation of a source, model, seed or snapshot.
fn relation_of(input: &Input, id: &str) -> Option<RelationName> {
    if let Some(src) = input.manifest.sources.get(id) {
        return Some(RelationName { database: src.database.clone(), schema: src.schema.clone(), name: src.identifier.clone() });
    }
    input.manifest.nodes.get(id).map(crate::run::runner::relation_name)
}

/// Sources read from local files: unique id -> (location, format).
fn file_sources(input: &Input) -> HashMap<String, (String, Option<String>)> {
    let setup = crate::run::setup::engine_setup(input.project, input.manifest, input.env);
    input
        .manifest
        .sources
        .values()
        .filter_map(|src| {
            let r = relation_of(input, &src.unique_id)?;
            let file = setup.externals.iter().find(|e| e.relation == r && !e.location.contains("://"))?;
            Some((src.unique_id.clone(), (file.location.clone(), file.format.clone())))
        })
        .collect()
}

/// `models` (in DAG order) grouped so that each reads only models of earlier groups.
fn levels<'n>(state: &State, models: &[&'n Node]) -> Vec<Vec<&'n Node>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<&Node>> = Vec::new();
    for n in models {
        // A child of an ephemeral model reads what the ephemeral reads (it is inlined), so it
        // is placed after those relations, not after the ephemeral model.
        let d = state.relation_parents(&n.unique_id).iter().filter_map(|p| depth.get(p.as_str())).map(|d| d + 1).max().unwrap_or(0);
        depth.insert(&n.unique_id, d);
        if levels.len() <= d {
            levels.resize_with(d + 1, Vec::new);
        }
        levels[d].push(n);
    }
    levels
}

fn columns(inferred: &Inferred) -> Columns {
    match inferred {
        Inferred::Known { schema, complete } => Columns::Known {
            columns: schema.fields().iter().map(|f| (f.name().clone(), types::sql_name(f.data_type()))).collect(),
            complete: *complete,
        },
        Inferred::Unknown(why) => Columns::Unknown(why.clone()),
    }
}

impl State<'_> {
    /// Records what a step found, and registers each known relation in the session as an
    /// empty relation of its columns, for the next steps to read.
    fn publish(&mut self, found: Vec<(String, Inferred)>) {
        for (id, mut inferred) in found {
            let relation = self.input.manifest.nodes.get(&id).is_none_or(|n| !n.is_ephemeral());
            if let Inferred::Known { schema, .. } = &inferred
                && relation
                && let Some(r) = self.relation(&id)
                && let Err(e) = self.engine.register_empty(&r, schema.clone())
            {
                inferred = Inferred::Unknown(e.message);
            }
            self.inferred.insert(id, inferred);
        }
    }

    /// A seed or a source.
    fn input_relation(&self, id: &str) -> Inferred {
        match self.input.manifest.nodes.get(id) {
            Some(node) => self.remembered_seed(node),
            None => self.source(id),
        }
    }

    /// [`State::seed`], remembered in the input's memo while its file and config are the same.
    fn remembered_seed(&self, node: &Node) -> Inferred {
        let Some(memo) = self.input.memo else { return self.seed(node) };
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (self.context, &node.checksum, serde_json::to_string(&*node.config).unwrap_or_default()).hash(&mut h);
        // A seed over 1 MiB has its path for a checksum: its file's size and time say more.
        let file = node.file.and_then(|f| std::fs::metadata(&self.input.project.files[f].abs_path).ok());
        file.map(|m| (m.len(), m.modified().ok())).hash(&mut h);
        memo.remembered(&node.unique_id, h.finish(), || (self.seed(node), None, true)).0
    }

    fn seed(&self, node: &Node) -> Inferred {
        let load = match crate::run::runner::seed_load(self.input.project, node, false) {
            Ok(load) => load,
            Err(f) => return Inferred::Unknown(f.message),
        };
        let registered = self.engine.register_seed(&load).map_err(|e| e.message);
        match registered
            .and_then(|()| self.engine.planner().plan_columns(&format!("select * from {}", self.quoted(&load.relation))).map_err(other))
        {
            Ok(schema) => Inferred::Known { schema, complete: true },
            Err(why) => Inferred::Unknown(format!("seed `{}`: {why}", node.name)),
        }
    }

    fn source(&self, id: &str) -> Inferred {
        let src = &self.input.manifest.sources[id];
        let Some(r) = self.relation(id) else { return Inferred::Unknown(format!("`{id}` is not a relation")) };
        let mut unreadable = None;
        if let Some((location, format)) = self.files.get(id) {
            let registered = self.engine.register_external(&r, location, format.as_deref()).map_err(|e| e.message);
            match registered.and_then(|()| self.engine.planner().plan_columns(&format!("select * from {}", self.quoted(&r))).map_err(other))
            {
                Ok(schema) => return Inferred::Known { schema, complete: true },
                // Not built yet, or not there on this machine: its YAML may still say.
                Err(why) => unreadable = Some(format!("source `{}.{}` ({location}): {why}", src.source_name, src.name)),
            }
        }
        let planner = self.engine.planner();
        let typed = |columns: &mut dyn Iterator<Item = (&str, &str)>| -> Vec<Field> {
            columns
                .map(|(name, t)| match planner.plan_columns(&format!("select cast(null as {}) as c", types::normalize(t))) {
                    Ok(s) => Field::new(name, s.field(0).data_type().clone(), true),
                    Err(_) => Field::new(name, DataType::Null, true),
                })
                .collect()
        };
        // Read from the warehouse by `kiln compile --introspect`: every column.
        if let Some(columns) = self.input.source_columns.get(id) {
            let fields = typed(&mut columns.iter().map(|(n, t)| (n.as_str(), t.as_str())));
            return Inferred::Known { schema: Arc::new(Schema::new(fields)), complete: true };
        }
        let fields = typed(&mut src.columns.values().filter_map(|c| Some((c.name.as_str(), c.data_type.as_deref()?))));
        if fields.is_empty() {
            return Inferred::Unknown(unreadable.unwrap_or_else(|| {
                format!(
                    "source `{}.{}` declares no column with a `data_type`, is not a local file, and was not read from the warehouse (`kiln compile --introspect`)",
                    src.source_name, src.name
                )
            }));
        }
        Inferred::Known { schema: Arc::new(Schema::new(fields)), complete: false }
    }

    /// What model (analysis, snapshot) `node` returns, and its lineage when its SQL planned;
    /// remembered in the input's memo when nothing was found in it.
    fn model(&self, planner: &Planner, node: &Node, found: &mut Vec<Diagnostic>) -> (Inferred, Option<NodeLineage>) {
        let Some(memo) = self.input.memo else { return self.plan_model(planner, node, found) };
        memo.remembered(&node.unique_id, self.memo_key(node), || {
            let (inferred, lineage) = self.plan_model(planner, node, found);
            (inferred, lineage, found.is_empty())
        })
    }

    /// What planning `node` depends on: its compiled SQL, config and contract, what its inputs
    /// are known to return, and the run's context.
    fn memo_key(&self, node: &Node) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.context.hash(&mut h);
        let compiled = &self.input.compiled[&node.unique_id];
        (&compiled.sql, compiled.queried, self.input.full_refresh.get(&node.unique_id)).hash(&mut h);
        for (id, _) in &compiled.extra_ctes {
            self.input.compiled.get(id).is_some_and(|c| c.queried).hash(&mut h);
        }
        serde_json::to_string(&*node.config).unwrap_or_default().hash(&mut h);
        for c in node.columns.values() {
            (&c.name, &c.data_type).hash(&mut h);
        }
        for parent in self.relation_parents(&node.unique_id) {
            parent.hash(&mut h);
            match self.inferred.get(&parent) {
                Some(Inferred::Known { schema, complete }) => (schema.fields(), complete).hash(&mut h),
                Some(Inferred::Unknown(why)) => why.hash(&mut h),
                None => 0.hash(&mut h),
            }
        }
        h.finish()
    }

    fn plan_model(&self, planner: &Planner, node: &Node, found: &mut Vec<Diagnostic>) -> (Inferred, Option<NodeLineage>) {
        let compiled = &self.input.compiled[&node.unique_id];
        let parsed = match self.input.check {
            Some(check) => {
                let (problems, parsed) = check(&node.unique_id, compiled);
                found.extend(problems);
                if parsed.is_none() {
                    return (Inferred::Unknown("its SQL was not checked, or does not parse".into()), None);
                }
                parsed
            }
            None => None,
        };
        if let (Some(catalog), Some(statements)) = (self.catalog, &parsed) {
            found.extend(calls::check(statements, catalog, &self.created).into_iter().map(|p| self.call_problem(node, p, &compiled.sql)));
        }
        let mut config = NodeConfig::from_map(&node.config).0;
        config.static_analysis = self.input.mode.unwrap_or(config.static_analysis);
        let mode = config.static_analysis;
        if mode == StaticAnalysis::Off {
            return (Inferred::Unknown(format!("`static_analysis` is off for `{}`", node.name)), None);
        }
        let queried = compiled.queried || compiled.extra_ctes.iter().any(|(id, _)| self.input.compiled.get(id).is_some_and(|c| c.queried));
        if queried && !self.input.queries_answered {
            let why = "its SQL depends on what the warehouse holds (it runs queries or introspects relations as it compiles), which analysis does not read";
            return (self.untyped(node, mode, why.into(), found), None);
        }
        let mut complete = true;
        for parent in self.relation_parents(&node.unique_id) {
            match self.inferred.get(&parent) {
                Some(Inferred::Known { complete: c, .. }) => complete &= c,
                Some(Inferred::Unknown(why)) => return (self.untyped(node, mode, why.clone(), found), None),
                None => return (self.untyped(node, mode, format!("`{parent}` was not compiled"), found), None),
            }
        }
        let full_refresh = self.input.full_refresh.get(&node.unique_id);
        let sql = full_refresh.unwrap_or(&compiled.sql);
        // Over an input known only in part (a source's YAML), `select *` is known in part too;
        // columns the model names are all there is.
        let output_complete = complete || !has_wildcard(sql);
        let dialect = self.input.target.adapter.dialect;
        let types = dialect.strict_types().then_some(TypeRules { string_literals_untyped: dialect.string_literals_untyped() });
        match planner.plan_query(sql, self.planned_statement(parsed, full_refresh), types) {
            Ok(Planned { schema, lineage, conflicts }) => {
                found.extend(conflicts.iter().map(|c| self.type_conflict(node, c, sql)));
                if config.contract_enforced && output_complete {
                    found.extend(self.contract(planner, node, &schema));
                }
                let inferred = match config.snapshot {
                    Some(snapshot) => Inferred::Known { schema: with_meta_columns(&schema, &snapshot), complete: output_complete },
                    None => Inferred::Known { schema, complete: output_complete },
                };
                (inferred, Some(self.node_lineage(lineage)))
            }
            Err(problem) => match self.report(node, mode, &problem, complete, sql) {
                Ok((why, diagnostic)) => {
                    found.push(diagnostic);
                    (Inferred::Unknown(why), None)
                }
                Err(why) => (self.untyped(node, mode, why, found), None),
            },
        }
    }

    /// The columns unit tests give their inputs or expect of their model that those do not
    /// have, when their columns are all known.
    fn unit_tests(&self) -> Vec<(String, Diagnostic)> {
        let tests: Vec<&Node> = self
            .input
            .manifest
            .unit_tests
            .values()
            .filter(|t| t.attached_node.as_ref().is_some_and(|m| self.inferred.contains_key(m)))
            .collect();
        if tests.is_empty() {
            return Vec::new();
        }
        let lookup = crate::graph::Lookup::new(self.input.manifest, self.input.project.name());
        let mut found = Vec::new();
        for test in tests {
            let mut named = crate::run::unit::given_columns(self.input.project, &lookup, test);
            if let Some(model) = &test.attached_node {
                named
                    .extend(crate::run::unit::expected_columns(self.input.project, test).map(|c| (model.clone(), "expect".to_string(), c)));
            }
            for (id, input, columns) in named {
                let Some(Inferred::Known { schema, complete: true }) = self.inferred.get(&id) else { continue };
                for c in columns.iter().filter(|c| !schema.fields().iter().any(|f| f.name().eq_ignore_ascii_case(c))) {
                    found.push((test.unique_id.clone(), self.unit_test_column(test, &input, c, schema)));
                }
            }
        }
        found
    }

    /// The statement to plan, when kiln has it parsed in the dialect the planner reads (else
    /// the planner parses `sql`), in its planned form (see [`calls::planned_form`]).
    fn planned_statement(
        &self,
        parsed: Option<Vec<sqlparser::ast::Statement>>,
        full_refresh: Option<&String>,
    ) -> Option<sqlparser::ast::Statement> {
        let dialect = self.input.target.adapter.dialect;
        if !dialect.planned_as_checked() {
            return None;
        }
        let mut statement = match (parsed, full_refresh) {
            (_, Some(sql)) => sqlparser::parser::Parser::parse_sql(dialect.sqlparser().as_ref(), sql).ok()?.pop()?,
            (Some(mut statements), None) if statements.len() == 1 => statements.pop()?,
            _ => return None,
        };
        if let Some(catalog) = self.catalog {
            calls::planned_form(&mut statement, catalog);
        }
        Some(statement)
    }

    /// How a model's columns differ from its enforced contract, as its build would find: names
    /// on every target; types on the embedded engine only, where analysis plans as the build
    /// does (elsewhere the warehouse's types are not DataFusion's).
    fn contract(&self, planner: &Planner, node: &Node, schema: &SchemaRef) -> Option<Diagnostic> {
        if node.columns.is_empty() || node.columns.values().any(|c| c.data_type.is_none()) {
            return None; // the build reports an incomplete contract itself
        }
        let inferred: Vec<(&str, String)> = schema.fields().iter().map(|f| (f.name().as_str(), types::sql_name(f.data_type()))).collect();
        let types_certain = self.input.target.engine() == crate::adapter::EngineKind::DataFusion;
        let mut problems = Vec::new();
        for c in node.columns.values() {
            match inferred.iter().find(|(n, _)| n.eq_ignore_ascii_case(&c.name)) {
                None => problems.push(format!("`{}` is in the contract, not in the model's SQL", c.name)),
                Some((_, actual)) if types_certain => {
                    let declared = c.data_type.as_deref().unwrap_or_default();
                    let sql = format!("select cast(null as {}) as c", types::normalize(declared));
                    if let Ok(d) = planner.plan_columns(&sql)
                        && !crate::jinja::column::same_type(actual, &types::sql_name(d.field(0).data_type()))
                    {
                        problems.push(format!("`{}` is {actual} in the model's SQL, {declared} in the contract", c.name));
                    }
                }
                Some(_) => {}
            }
        }
        for (name, _) in &inferred {
            if !node.columns.values().any(|c| c.name.eq_ignore_ascii_case(name)) {
                problems.push(format!("`{name}` is in the model's SQL, not in the contract"));
            }
        }
        if problems.is_empty() {
            return None;
        }
        let declared_in = node.patch_path.as_deref().map(|p| p.split_once("://").map_or(p, |(_, path)| path)).unwrap_or("its YAML");
        let d = Diagnostic::error(Code::ContractMismatch, format!("the columns of {} do not match its enforced contract", what(node)))
            .with_file(self.display_path(node));
        let d = problems.into_iter().fold(d, Diagnostic::with_note);
        Some(d.with_help(format!(
            "make the names, data types and number of columns in the contract ({declared_in}) match the model's SQL; building it would fail"
        )))
    }

    /// The relations `id` reads: its parents, through ephemeral models (inlined as CTEs). An
    /// ephemeral model that was not compiled is listed itself: its CTE is missing, and nothing
    /// is known of it.
    fn relation_parents(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack: Vec<&str> = vec![id];
        let mut seen = HashSet::new();
        while let Some(current) = stack.pop() {
            for p in self.input.graph.parents.get(current).map(Vec::as_slice).unwrap_or(&[]) {
                if !seen.insert(p.as_str()) {
                    continue;
                }
                match self.input.manifest.nodes.get(p) {
                    Some(n) if n.is_ephemeral() && !self.input.compiled.contains_key(p) => out.push(p.clone()),
                    Some(n) if n.is_ephemeral() => stack.push(p),
                    Some(n) if !matches!(n.resource_type, ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot) => {}
                    _ => out.push(p.clone()),
                }
            }
        }
        out
    }

    fn relation(&self, id: &str) -> Option<RelationName> {
        relation_of(self.input, id)
    }

    /// The lineage of a planned model, with the relations it reads named by unique id.
    fn node_lineage(&self, lineage: Lineage) -> NodeLineage {
        let read = |((database, schema, table), column): &Read, how: Option<Derivation>| {
            let key = (database.clone(), schema.clone(), table.clone());
            let node = self.relations.get(&key).cloned().unwrap_or_else(|| format!("{database}.{schema}.{table}"));
            ColumnRead { node, column: column.clone(), how: how.map(|h| h.as_str().to_string()) }
        };
        NodeLineage {
            columns: lineage
                .columns
                .into_iter()
                .map(|(c, reads)| (c, reads.iter().map(|(r, how)| read(r, Some(*how))).collect()))
                .collect(),
            filters: lineage.filters.iter().map(|r| read(r, None)).collect(),
            join_keys: lineage.join_keys.iter().map(|r| read(r, None)).collect(),
        }
    }

    fn quoted(&self, r: &RelationName) -> String {
        let q = self.input.target.quote_char();
        crate::jinja::relation::Relation::new(&r.database, &r.schema, &r.name, q).render()
    }

    /// An unknown result: in strict mode, a warning saying why.
    fn untyped(&self, node: &Node, mode: StaticAnalysis, why: String, found: &mut Vec<Diagnostic>) -> Inferred {
        if mode == StaticAnalysis::Strict {
            found.push(
                Diagnostic::warning(
                    Code::Untyped,
                    format!("kiln cannot tell the columns of {} `{}`", node.resource_type.as_str(), node.name),
                )
                .with_file(self.display_path(node))
                .with_note(why.clone())
                .with_help("`static_analysis: baseline` reports only what is certain"),
            );
        }
        Inferred::Unknown(why)
    }

    fn display_path(&self, node: &Node) -> String {
        node.file.map_or(node.original_file_path.clone(), |f| self.input.project.files[f].display_path.clone())
    }
}

fn other(problem: PlanProblem) -> String {
    match problem {
        PlanProblem::Other(m) => m,
        p => format!("{p:?}"),
    }
}

fn what(node: &Node) -> String {
    format!("{} `{}`", node.resource_type.as_str(), node.name)
}

/// Whether `sql` selects `*` or `x.*` somewhere (not `count(*)`, not a product).
fn has_wildcard(sql: &str) -> bool {
    sql.match_indices('*').any(|(i, _)| {
        let before = sql[..i].trim_end();
        let after = sql[i + 1..].trim_start();
        let word_before = before.rsplit(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("");
        let opens = before.ends_with([',', '.']) || ["select", "distinct", "all"].iter().any(|w| word_before.eq_ignore_ascii_case(w));
        opens && !after.starts_with(')')
    })
}

/// A snapshot's columns: its select's, then dbt's meta columns.
fn with_meta_columns(select: &SchemaRef, config: &crate::project::typed::SnapshotConfig) -> SchemaRef {
    let stamp = match &config.strategy {
        SnapshotStrategy::Timestamp { updated_at } => select
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(updated_at))
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Timestamp(TimeUnit::Microsecond, None)),
        SnapshotStrategy::Check { .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
    };
    let names = &config.columns;
    let mut fields: Vec<Field> = select.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(&names.scd_id, DataType::Utf8, true));
    for name in [&names.updated_at, &names.valid_from, &names.valid_to] {
        fields.push(Field::new(name, stamp.clone(), true));
    }
    if config.hard_deletes == HardDeletes::NewRecord {
        fields.push(Field::new(&names.is_deleted, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wildcards() {
        assert!(has_wildcard("select * from t"));
        assert!(has_wildcard("select a.*, b.x from a join b using (id)"));
        assert!(has_wildcard("select id, * exclude (x) from t"));
        assert!(!has_wildcard("select count(*), a * 2 as b from t"));
        assert!(!has_wildcard("select id /* note */ from t"));
    }
}
