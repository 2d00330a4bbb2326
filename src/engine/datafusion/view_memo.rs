//! Views computed once per run for data tests.
//!
//! DataFusion inlines a view into every query that reads it, so a test on a view that unions
//! other views plans and scans the whole tree below it, again for each test. Data tests instead
//! run in a second session whose catalog wraps the warehouse's ([`overlay`]): there a view is a
//! [`MemoView`], computed on first use from its SQL (its own parents resolved the same way) and
//! kept in memory when small, so the tests of a model and of its children share the work.
//!
//! Limits: an entry is kept only under [`ViewMemo::per_entry`] bytes (estimated from the plan's
//! statistics before running, checked while collecting), all entries under [`ViewMemo::budget`],
//! least recently used evicted first, and every byte is reserved from the session's memory
//! pool, so `memory_limit` bounds it too. An entry is dropped when the relation or anything it
//! reads is replaced ([`ViewMemo::invalidate`]).

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Computed views of a run, shared by the sessions of the overlay.
#[derive(Debug)]
pub struct ViewMemo {
    slots: Mutex<Slots>,
    clock: AtomicU64,
    /// Bumped by every invalidation: a result computed across one is not kept.
    generation: AtomicU64,
    /// Most bytes one view may take.
    pub per_entry: usize,
    /// Most bytes all views may take together.
    pub budget: usize,
}

#[derive(Debug, Default)]
struct Slots {
    by_key: HashMap<String, Arc<Slot>>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Slot {
    value: tokio::sync::OnceCell<Option<Computed>>,
    last_used: AtomicU64,
}

#[derive(Debug)]
struct Computed {
    table: Arc<MemTable>,
    /// Relations (keys) the view reads directly.
    reads: Vec<String>,
    bytes: usize,
    _reservation: MemoryReservation,
}

/// `catalog.schema.table`, the memo's key for a relation.
pub fn key(catalog: &str, schema: &str, table: &str) -> String {
    format!("{catalog}.{schema}.{table}")
}

impl ViewMemo {
    pub fn new(budget: usize) -> ViewMemo {
        ViewMemo { slots: Mutex::default(), clock: AtomicU64::new(0), generation: AtomicU64::new(0), per_entry: budget / 4, budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `key` and every view that reads it, directly or through other views.
    pub fn invalidate(&self, key: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut slots = self.lock();
        let mut gone = vec![key.to_string()];
        while let Some(k) = gone.pop() {
            if let Some(slot) = slots.by_key.remove(&k) {
                slots.bytes -= slot.value.get().and_then(Option::as_ref).map_or(0, |c| c.bytes);
            }
            let readers: Vec<String> = slots
                .by_key
                .iter()
                .filter(|(_, s)| s.value.get().and_then(Option::as_ref).is_some_and(|c| c.reads.contains(&k)))
                .map(|(reader, _)| reader.clone())
                .collect();
            gone.extend(readers);
        }
    }

    /// Forgets everything (a statement of unknown effect ran).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut slots = self.lock();
        slots.by_key.clear();
        slots.bytes = 0;
    }

    /// Whether `key` was found too large to keep.
    fn too_large(&self, key: &str) -> bool {
        self.lock().by_key.get(key).is_some_and(|s| matches!(s.value.get(), Some(None)))
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The view `key` computed from `sql` in `state`; `None` when it is too large to keep.
    async fn get(&self, key: &str, sql: &str, state: &SessionState) -> Result<Option<Arc<MemTable>>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let slot = self.lock().by_key.entry(key.to_string()).or_default().clone();
        slot.last_used.store(tick, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::SeqCst);
        let mut fresh = false;
        let computed = slot
            .value
            .get_or_try_init(|| {
                fresh = true;
                self.compute(sql, state)
            })
            .await?;
        let table = computed.as_ref().map(|c| c.table.clone());
        if fresh {
            let mut slots = self.lock();
            let current = slots.by_key.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot));
            if !current || self.generation.load(Ordering::SeqCst) != generation {
                // Something it may read was replaced meanwhile: use it once, do not keep it.
                if current {
                    slots.by_key.remove(key);
                }
            } else {
                slots.bytes += computed.as_ref().map_or(0, |c| c.bytes);
                self.evict(&mut slots, key);
            }
        }
        Ok(table)
    }

    /// Drops the least recently used entries (never `keep`) until under the budget.
    fn evict(&self, slots: &mut Slots, keep: &str) {
        if slots.bytes <= self.budget {
            return;
        }
        let mut held: Vec<(u64, String, usize)> = slots
            .by_key
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .filter_map(|(k, s)| s.value.get().and_then(Option::as_ref).map(|c| (s.last_used.load(Ordering::Relaxed), k.clone(), c.bytes)))
            .collect();
        held.sort();
        for (_, k, bytes) in held {
            if slots.bytes <= self.budget {
                break;
            }
            slots.by_key.remove(&k);
            slots.bytes -= bytes;
        }
    }

    async fn compute(&self, sql: &str, state: &SessionState) -> Result<Option<Computed>> {
        use futures::StreamExt;
        let statement = state.sql_to_statement(sql, &state.config_options().sql_parser.dialect)?;
        let (plan, reads) = plan(statement, state).await?;
        let physical = state.create_physical_plan(&plan).await?;
        if estimated_bytes(physical.as_ref()).is_some_and(|b| b > self.per_entry) {
            return Ok(None);
        }
        let reservation = MemoryConsumer::new("kiln view memo").register(&state.runtime_env().memory_pool);
        let schema = physical.schema();
        let mut stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx())?;
        let (mut batches, mut bytes) = (Vec::new(), 0);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let size = batch.get_array_memory_size();
            bytes += size;
            if bytes > self.per_entry || reservation.try_grow(size).is_err() {
                return Ok(None);
            }
            batches.push(batch);
        }
        let table = Arc::new(MemTable::try_new(schema, vec![batches])?);
        Ok(Some(Computed { table, reads, bytes, _reservation: reservation }))
    }
}

/// The plan's output size in bytes as its statistics estimate it (rows times a row's width
/// when only the row count is known).
fn estimated_bytes(plan: &dyn ExecutionPlan) -> Option<usize> {
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let stats = StatisticsContext::new().compute(plan, &StatisticsArgs::new()).ok()?;
    if let Some(b) = stats.total_byte_size.get_value() {
        return Some(*b);
    }
    let rows = *stats.num_rows.get_value()?;
    let width: usize = plan.schema().fields().iter().map(|f| f.data_type().primitive_width().unwrap_or(16)).sum();
    Some(rows.saturating_mul(width.max(1)))
}

/// The plan of `sql` and the keys of the relations it names (what it reads directly, views not
/// looked into), from one parse.
pub async fn plan(statement: datafusion::sql::parser::Statement, state: &SessionState) -> Result<(LogicalPlan, Vec<String>)> {
    let options = state.config_options();
    let (catalog, schema) = (&options.catalog.default_catalog, &options.catalog.default_schema);
    let mut reads: Vec<String> = state
        .resolve_table_references(&statement)?
        .into_iter()
        .map(|r| {
            let r = r.resolve(catalog, schema);
            key(&r.catalog, &r.schema, &r.table)
        })
        .collect();
    reads.sort();
    reads.dedup();
    Ok((state.statement_to_plan(statement).await?, reads))
}

/// A catalog list that shows `base` with every view replaced by a [`MemoView`].
pub fn overlay(base: Arc<dyn CatalogProviderList>, memo: Arc<ViewMemo>) -> Arc<dyn CatalogProviderList> {
    Arc::new(OverlayList { base, memo })
}

#[derive(Debug)]
struct OverlayList {
    base: Arc<dyn CatalogProviderList>,
    memo: Arc<ViewMemo>,
}

impl CatalogProviderList for OverlayList {
    fn register_catalog(&self, name: String, catalog: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        self.base.register_catalog(name, catalog)
    }
    fn catalog_names(&self) -> Vec<String> {
        self.base.catalog_names()
    }
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let base = self.base.catalog(name)?;
        Some(Arc::new(OverlayCatalog { name: name.to_string(), base, memo: self.memo.clone() }))
    }
}

#[derive(Debug)]
struct OverlayCatalog {
    name: String,
    base: Arc<dyn CatalogProvider>,
    memo: Arc<ViewMemo>,
}

impl CatalogProvider for OverlayCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.base.schema_names()
    }
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let base = self.base.schema(name)?;
        Some(Arc::new(OverlaySchema { catalog: self.name.clone(), schema: name.to_string(), base, memo: self.memo.clone() }))
    }
    fn register_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.base.register_schema(name, schema)
    }
}

#[derive(Debug)]
struct OverlaySchema {
    catalog: String,
    schema: String,
    base: Arc<dyn SchemaProvider>,
    memo: Arc<ViewMemo>,
}

#[async_trait]
impl SchemaProvider for OverlaySchema {
    fn table_names(&self) -> Vec<String> {
        self.base.table_names()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.base.table(name).await? else { return Ok(None) };
        if table.table_type() != TableType::View {
            return Ok(Some(table));
        }
        let key = key(&self.catalog, &self.schema, name);
        let Some(sql) = table.get_table_definition().map(str::to_string) else { return Ok(Some(table)) };
        if self.memo.too_large(&key) {
            return Ok(Some(table));
        }
        Ok(Some(Arc::new(MemoView { key, sql, schema: table.schema(), memo: self.memo.clone() })))
    }
    fn table_exist(&self, name: &str) -> bool {
        self.base.table_exist(name)
    }
}

/// A view of the overlay: its rows from the memo, or planned from its SQL when too large.
#[derive(Debug)]
struct MemoView {
    key: String,
    sql: String,
    schema: SchemaRef,
    memo: Arc<ViewMemo>,
}

#[async_trait]
impl TableProvider for MemoView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("a memoized view needs a SessionState".into()))?;
        if let Some(table) = self.memo.get(&self.key, &self.sql, state).await? {
            return table.scan(session, projection, &[], limit).await;
        }
        // Too large to keep: plan the view here (its parents still read through the overlay);
        // later queries get the warehouse's view, optimized as a whole (see OverlaySchema).
        let plan = state.create_logical_plan(&self.sql).await?;
        datafusion::catalog::view::ViewTable::new(plan, None).scan(session, projection, &[], limit).await
    }
}
