//! The partial aggregation of a `group by` on one text column with few values.
//!
//! `select status, count(*), sum(amount) from orders group by status` is a common shape of a
//! mart. DataFusion's partial aggregation finds each row's group with its general-purpose
//! interner: over 1M rows in three groups it took 4.3-5 ms on each of two cores, two thirds of
//! it hashing and interning, most of the time of reading back a table just written (see
//! `docs/benchmarks.md`). [`OneKeyAggregateRule`] puts [`OneKeyAggregateExec`] in place of a
//! partial `AggregateExec` grouped by one text column as DataFusion reads text from Parquet
//! (`Utf8View`). It finds each row's group in a small open-addressing table keyed by the
//! value's view: a text of up to 12 bytes is all in it, compared as one 128-bit number; longer
//! text is compared by its bytes. The aggregates are DataFusion's own group accumulators, so
//! its output is the partial state the final aggregation expects, and the results are
//! DataFusion's. Integer keys stay with DataFusion, whose interner for them is already direct
//! (they are mostly ids, with many groups).
//!
//! Past [`MAX_GROUPS`] groups it emits the state of the groups it has and hands the rest of its
//! input to the `AggregateExec` it replaced (`handed_over` in `EXPLAIN ANALYZE`): with many
//! groups DataFusion's interner is the better one, and it has the memory accounting and early
//! emission that many groups need. Below that, its groups are not reserved from the memory
//! pool: a few MB at most.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringViewBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Groups one partition may hold before it hands its input over to DataFusion's aggregation.
const MAX_GROUPS: usize = 1 << 14;

/// Replaces a partial `AggregateExec` grouped by one `Utf8View` column, without
/// grouping sets, `FILTER`, ordered or distinct aggregates or a limit, with a
/// [`OneKeyAggregateExec`].
#[derive(Debug)]
pub struct OneKeyAggregateRule;

impl PhysicalOptimizerRule for OneKeyAggregateRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| Ok(replacement(&node).map_or_else(|| Transformed::no(node), Transformed::yes))).data()
    }

    fn name(&self) -> &str {
        "kiln_one_key_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn replacement(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let aggregate = node.downcast_ref::<AggregateExec>()?;
    let group_by = aggregate.group_expr();
    let [(key, _)] = group_by.expr() else { return None };
    let plain = *aggregate.mode() == AggregateMode::Partial
        && !group_by.has_grouping_set()
        && aggregate.limit_options().is_none()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.aggr_expr().iter().all(|a| a.groups_accumulator_supported() && a.order_bys().is_empty() && !a.is_distinct());
    let text = key.data_type(&aggregate.input_schema()).ok()? == DataType::Utf8View;
    (plain && text).then(|| {
        Arc::new(OneKeyAggregateExec { replaced: node.clone(), metrics: ExecutionPlanMetricsSet::new() }) as Arc<dyn ExecutionPlan>
    })
}

/// A partial aggregation grouped by one text column (see the module's documentation).
#[derive(Debug)]
pub struct OneKeyAggregateExec {
    /// The partial `AggregateExec` it stands for: its input, aggregates and output schema, and
    /// what runs past [`MAX_GROUPS`].
    replaced: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl OneKeyAggregateExec {
    fn aggregate(&self) -> &AggregateExec {
        self.replaced.downcast_ref::<AggregateExec>().expect("built from an AggregateExec")
    }

    /// The one group-by expression (checked by the rule).
    fn key(&self) -> &Arc<dyn PhysicalExpr> {
        &self.aggregate().group_expr().expr()[0].0
    }
}

impl DisplayAs for OneKeyAggregateExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let aggregates: Vec<&str> = self.aggregate().aggr_expr().iter().map(|a| a.name()).collect();
        write!(f, "OneKeyAggregateExec: gby=[{}], aggr=[{}]", self.key(), aggregates.join(", "))
    }
}

impl ExecutionPlan for OneKeyAggregateExec {
    fn name(&self) -> &str {
        "OneKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.replaced.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate().input()]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        self.replaced.apply_expressions(f)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)] // the trait still requires it (DataFusion 55)
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let replaced = replace_children_if_necessary(self.replaced.clone(), children)?;
        Ok(Arc::new(OneKeyAggregateExec { replaced, metrics: ExecutionPlanMetricsSet::new() }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.aggregate().input().execute(partition, context.clone())?;
        let schema = self.schema();
        let groups = Groups::new(self)?;
        let metrics = Metrics {
            handed_over: MetricBuilder::new(&self.metrics).counter("handed_over", partition),
            elapsed: MetricBuilder::new(&self.metrics).elapsed_compute(partition),
        };
        let batches = futures::stream::once(aggregate(groups, input, self.replaced.clone(), context, metrics)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

struct Metrics {
    handed_over: Count,
    elapsed: Time,
}

/// Aggregates `input` into `groups`, or, past [`MAX_GROUPS`], emits them and hands the rest of
/// `input` over to `replaced`.
async fn aggregate(
    mut groups: Groups,
    mut input: SendableRecordBatchStream,
    replaced: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    metrics: Metrics,
) -> Result<SendableRecordBatchStream> {
    let schema = replaced.schema();
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if groups.len() > MAX_GROUPS {
            metrics.handed_over.add(1);
            let so_far = futures::stream::iter([groups.emit(&schema)]);
            let rest = hand_over(&replaced, batch, input, context)?;
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, so_far.chain(rest))));
        }
        let _timer = metrics.elapsed.timer();
        groups.push(&batch)?;
    }
    let done = futures::stream::iter([groups.emit(&schema)]);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, done)))
}

/// Runs the replaced `AggregateExec` over `batch` and the rest of `input`.
fn hand_over(
    replaced: &Arc<dyn ExecutionPlan>,
    batch: RecordBatch,
    input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let schema = input.schema();
    let replay = futures::stream::iter([Ok(batch)]).chain(input);
    let leaf = super::partition_top_k::replayed(Box::pin(RecordBatchStreamAdapter::new(schema, replay)))?;
    replace_children_if_necessary(replaced.clone(), vec![leaf])?.execute(0, context)
}

/// The groups of one partition and their accumulators.
struct Groups {
    key: Arc<dyn PhysicalExpr>,
    table: Table,
    ids: Vec<usize>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl Groups {
    fn new(exec: &OneKeyAggregateExec) -> Result<Groups> {
        let aggregate = exec.aggregate();
        Ok(Groups {
            key: exec.key().clone(),
            table: Table::default(),
            ids: vec![],
            arguments: aggregate.aggr_expr().iter().map(|a| a.expressions()).collect(),
            accumulators: aggregate.aggr_expr().iter().map(|a| a.create_groups_accumulator()).collect::<Result<_>>()?,
        })
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        self.ids.clear();
        self.table.intern_views(keys.as_string_view(), &mut self.ids);
        let groups = self.table.len();
        for (accumulator, arguments) in self.accumulators.iter_mut().zip(&self.arguments) {
            let values: Vec<ArrayRef> = arguments.iter().map(|e| e.evaluate(batch)?.into_array(rows)).collect::<Result<_>>()?;
            accumulator.update_batch(&values, &self.ids, None, groups)?;
        }
        Ok(())
    }

    /// The partial aggregation's output for every group so far; the groups are then empty.
    fn emit(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = vec![self.table.key_array()?];
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        self.table = Table::default();
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

const EMPTY: u32 = u32::MAX;

/// Open addressing over group ids. A group's key is 128 bits: a text view (text of up to 12
/// bytes is all in it) or, for longer text, its hash with a length no view has (the text itself
/// is compared too).
#[derive(Default)]
struct Table {
    /// Group ids by slot; a power of two, at most half full.
    slots: Vec<u32>,
    /// 64 minus log2 of the slot count: a key's slot is the top bits of its hash.
    shift: u32,
    keys: Vec<u128>,
    /// Bytes of long text keys: (start, end) in `bytes`, by group (empty for other groups).
    long: Vec<(usize, usize)>,
    bytes: Vec<u8>,
    null_group: Option<usize>,
}

/// The slot of `key` in a table of `64 - shift` bits (Fibonacci hashing of its folded halves).
fn slot_of(key: u128, shift: u32) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(23);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

/// A long text's key: its hash above a length field no view can hold.
fn long_key(bytes: &[u8]) -> u128 {
    let hash = bytes.chunks(8).fold(bytes.len() as u64, |h, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517C_C1B7_2722_0A95)
    });
    (u128::from(hash) << 64) | u128::from(u32::MAX)
}

impl Table {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn null_id(&mut self) -> usize {
        if let Some(id) = self.null_group {
            return id;
        }
        // The null group takes the next id; it has no slot.
        self.keys.push(0);
        self.long.push((0, 0));
        self.null_group = Some(self.keys.len() - 1);
        self.keys.len() - 1
    }

    fn text(&self, g: usize) -> &[u8] {
        &self.bytes[self.long[g].0..self.long[g].1]
    }

    /// The group of `key`, added when new; `long` is the text of a key its view cannot hold.
    /// Inlined, so the check of `long` folds away where a view holds the whole text.
    #[inline(always)]
    fn intern(&mut self, key: u128, long: Option<&[u8]>) -> usize {
        let mask = self.slots.len().wrapping_sub(1);
        let mut slot = slot_of(key, self.shift);
        while let Some(&id) = self.slots.get(slot) {
            if id == EMPTY {
                break;
            }
            if self.keys[id as usize] == key && long.is_none_or(|text| self.text(id as usize) == text) {
                return id as usize;
            }
            slot = (slot + 1) & mask;
        }
        self.insert(key, long)
    }

    /// Adds a group for `key` (not in the table).
    #[cold]
    fn insert(&mut self, key: u128, long: Option<&[u8]>) -> usize {
        let id = self.keys.len();
        self.keys.push(key);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(long.unwrap_or_default());
        self.long.push((start, self.bytes.len()));
        if 2 * self.keys.len() >= self.slots.len() {
            self.grow();
        } else {
            self.place(id);
        }
        id
    }

    /// Puts group `g` in its slot or the next free one.
    fn place(&mut self, g: usize) {
        let mask = self.slots.len() - 1;
        let mut slot = slot_of(self.keys[g], self.shift);
        while self.slots[slot] != EMPTY {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = g as u32;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        self.shift = 64 - size.trailing_zeros();
        self.slots = vec![EMPTY; size];
        for g in 0..self.keys.len() {
            if Some(g) != self.null_group {
                self.place(g);
            }
        }
    }

    fn intern_views(&mut self, keys: &datafusion::arrow::array::StringViewArray, ids: &mut Vec<usize>) {
        for (i, &view) in keys.views().iter().enumerate() {
            let id = if keys.is_null(i) {
                self.null_id()
            } else if (view as u32) <= 12 {
                self.intern(view, None)
            } else {
                let text = keys.value(i).as_bytes();
                self.intern(long_key(text), Some(text))
            };
            ids.push(id);
        }
    }

    /// The groups' keys as a text column, in group order.
    fn key_array(&self) -> Result<ArrayRef> {
        let mut builder = StringViewBuilder::with_capacity(self.keys.len());
        for (g, &view) in self.keys.iter().enumerate() {
            let (start, end) = self.long[g];
            let text = if Some(g) == self.null_group {
                builder.append_null();
                continue;
            } else if end > start {
                &self.bytes[start..end]
            } else {
                &view.to_le_bytes()[4..4 + view as u32 as usize]
            };
            builder.append_value(std::str::from_utf8(text).map_err(|e| internal_datafusion_err!("{e}"))?);
        }
        Ok(Arc::new(builder.finish()))
    }
}
