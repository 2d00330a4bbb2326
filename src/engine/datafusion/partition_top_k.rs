//! The first rows of every partition without sorting the input.
//!
//! `select ... from (select ..., row_number() over (partition by customer_id order by amount desc)
//! as rn from orders) where rn <= 3` is how dbt projects keep the top rows per group (and, with
//! `rn = 1`, the latest row per key). DataFusion sorts the whole input by partition and order
//! keys, numbers the rows, then filters. [`PartitionTopKRule`] replaces the sort and the window
//! node under such a filter with [`PartitionTopKExec`], which keeps, per partition, the first
//! `k` rows by the order keys as they stream in (group ids from DataFusion's hash aggregation
//! interner, order keys compared as arrow rows), then numbers them. The filter stays above it.
//!
//! Ties between equal order keys go to the row read first; `row_number` over ties is
//! arbitrary in SQL, and DataFusion's sort does not promise an order between them either.

use super::sorted_window::arrays;
use datafusion::arrow::array::{AsArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::utils::split_conjunction;
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, replace_children_if_necessary};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputDistributionRequirements, InputOrderMode, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Above this many rows per partition a sort is the better plan (and `k` slots per partition
/// would cost more memory than the rows they save).
const MAX_K: u64 = 64;

/// Kept rows are copied out of their batches once the batches hold this many rows and at least
/// twice as many as are kept.
const COMPACT_MIN_ROWS: usize = 1 << 16;

/// Replaces `filter(rn <= k, row_number() over (partition by ... order by ...) as rn, sort(x))`
/// with `filter(rn <= k, PartitionTopKExec(x))`.
#[derive(Debug)]
pub struct PartitionTopKRule;

impl PhysicalOptimizerRule for PartitionTopKRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| Ok(replacement(&node).map_or_else(|| Transformed::no(node), Transformed::yes))).data()
    }

    fn name(&self) -> &str {
        "kiln_partition_top_k"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with a [`PartitionTopKExec`] in place of the sort and window node under it, when
/// `node` is a filter that bounds a partitioned `row_number` over a sort (through a projection
/// of columns, if any).
fn replacement(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let filter = node.downcast_ref::<FilterExec>()?;
    let projection = filter.input().downcast_ref::<ProjectionExec>();
    let window_node = projection.map_or(filter.input(), |p| p.input());
    let window = window_node.downcast_ref::<BoundedWindowAggExec>()?;
    let [expr] = window.window_expr() else { return None };
    let sort = window.input().downcast_ref::<SortExec>()?;
    if window.input_order_mode != InputOrderMode::Sorted || sort.fetch().is_some() || expr.partition_by().is_empty() {
        return None;
    }
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let func = standard.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>()?;
    if func.fun().name() != "row_number" {
        return None;
    }
    // The row number's column as the filter sees it.
    let rn = window.input().schema().fields().len();
    let rn = match projection {
        None => rn,
        Some(p) => p.expr().iter().position(|e| e.expr.downcast_ref::<Column>().is_some_and(|c| c.index() == rn))?,
    };
    let k = split_conjunction(filter.predicate()).into_iter().filter_map(|p| bound(p, rn)).min()?;
    if !(1..=MAX_K).contains(&k) {
        return None;
    }
    let exec: Arc<dyn ExecutionPlan> = Arc::new(PartitionTopKExec {
        window: window_node.clone(),
        metrics: ExecutionPlanMetricsSet::new(),
        input: sort.input().clone(),
        partition_by: expr.partition_by().to_vec(),
        order_by: expr.order_by().to_vec(),
        k: k as usize,
        distribution: window.input_distribution_requirements(),
        properties: Arc::new(PlanProperties::new(
            EquivalenceProperties::new(window.schema()),
            sort.input().output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        )),
    });
    let filter_input = match projection {
        None => exec,
        Some(_) => replace_children_if_necessary(filter.input().clone(), vec![exec]).ok()?,
    };
    replace_children_if_necessary(node.clone(), vec![filter_input]).ok()
}

/// The largest row number `predicate` lets through, when it bounds column `rn` from above.
fn bound(predicate: &Arc<dyn PhysicalExpr>, rn: usize) -> Option<u64> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    let is_rn = |e: &Arc<dyn PhysicalExpr>| {
        let e = e.downcast_ref::<CastExpr>().map_or(e, |c| c.expr());
        e.downcast_ref::<Column>().is_some_and(|c| c.index() == rn)
    };
    let number =
        |e: &Arc<dyn PhysicalExpr>| match e.downcast_ref::<Literal>()?.value().cast_to(&datafusion::arrow::datatypes::DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) => Some(n),
            _ => None,
        };
    let (op, n) = if is_rn(binary.left()) {
        (*binary.op(), number(binary.right())?)
    } else if is_rn(binary.right()) {
        (binary.op().swap()?, number(binary.left())?)
    } else {
        return None;
    };
    let bound = match op {
        Operator::LtEq | Operator::Eq => n,
        Operator::Lt => n - 1,
        _ => return None,
    };
    u64::try_from(bound).ok()
}

/// The input's columns and `row_number`, for the first `k` rows of each partition.
#[derive(Debug)]
pub struct PartitionTopKExec {
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<PhysicalSortExpr>,
    k: usize,
    distribution: InputDistributionRequirements,
    properties: Arc<PlanProperties>,
    /// The window node replaced (over its sort), run over what is kept so far and the rest of
    /// the input when the memory pool refuses more.
    window: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for PartitionTopKExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let keys: Vec<String> = self.partition_by.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.order_by.iter().map(|e| e.to_string()).collect();
        write!(f, "PartitionTopKExec: k={}, partition_by=[{}], order_by=[{}]", self.k, keys.join(", "), order.join(", "))
    }
}

impl ExecutionPlan for PartitionTopKExec {
    fn name(&self) -> &str {
        "PartitionTopKExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        for e in self.partition_by.iter().chain(self.order_by.iter().map(|s| &s.expr)) {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.distribution.clone()
    }

    #[allow(deprecated)] // the trait still requires it (DataFusion 55)
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().unwrap_or_else(|| self.input.clone());
        Ok(Arc::new(PartitionTopKExec {
            input,
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            k: self.k,
            distribution: self.distribution.clone(),
            properties: self.properties.clone(),
            window: self.window.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context.clone())?;
        let schema = self.schema();
        let mut top = TopK::new(self, &context, partition)?;
        let (window, out_schema) = (self.window.clone(), schema.clone());
        let fell_back = MetricBuilder::new(&self.metrics).counter("fell_back_to_sort", partition);
        let batches = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if let Err(e) = top.push(&batch) {
                    if !matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
                        return Err(e);
                    }
                    fell_back.add(1);
                    let kept = top.kept().map(|kept| kept.map(|(batch, _)| batch));
                    return fall_back(&window, kept, batch, input, context);
                }
            }
            let batches = top.finish(out_schema.clone());
            Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, futures::stream::iter(batches))) as SendableRecordBatchStream)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// Runs the replaced sort and window node over the rows kept so far (no row dropped can be
/// among the first `k` of its partition), `batch` and the rest of `input`: the sort spills
/// where the memory pool asks it to.
fn fall_back(
    window: &Arc<dyn ExecutionPlan>,
    kept: impl Iterator<Item = Result<RecordBatch>> + Send + 'static,
    batch: RecordBatch,
    input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let schema = input.schema();
    let replay = futures::stream::iter(kept.chain([Ok(batch)])).chain(input);
    let leaf = replayed(Box::pin(RecordBatchStreamAdapter::new(schema, replay)))?;
    let sort = window.children()[0].clone();
    let plan = replace_children_if_necessary(window.clone(), vec![replace_children_if_necessary(sort, vec![leaf])?])?;
    let plan = super::sorted_window::SortedWindowRule.optimize(plan, context.session_config().options())?;
    plan.execute(0, context)
}

/// `stream` as the one partition of a leaf plan, read once: the rest of an input an operator
/// hands over to the plan it stands for.
pub(super) fn replayed(stream: SendableRecordBatchStream) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = stream.schema();
    let source = Arc::new(OneShotStream(schema.clone(), std::sync::Mutex::new(Some(stream))));
    Ok(Arc::new(StreamingTableExec::try_new(schema, vec![source], None, vec![], false, None)?))
}

/// A stream read once, as a partition of a [`StreamingTableExec`] (see [`replayed`]).
struct OneShotStream(SchemaRef, std::sync::Mutex<Option<SendableRecordBatchStream>>);

impl std::fmt::Debug for OneShotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("OneShotStream")
    }
}

impl PartitionStream for OneShotStream {
    fn schema(&self) -> &SchemaRef {
        &self.0
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.1.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken.unwrap_or_else(|| {
            let read_twice = DataFusionError::Internal("an input handed over was read twice".into());
            Box::pin(RecordBatchStreamAdapter::new(self.0.clone(), futures::stream::iter([Err(read_twice)])))
        })
    }
}

/// The first `k` rows of each partition seen so far.
struct TopK {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<Arc<dyn PhysicalExpr>>,
    k: usize,
    groups: Box<dyn GroupValues>,
    ids: Vec<usize>,
    order: RowConverter,
    /// The batches kept rows are in, and their order keys as rows.
    batches: Vec<RecordBatch>,
    keys: Vec<Rows>,
    retained_rows: usize,
    /// `k` slots per partition, the first `counts[g]` of them used, best first: (batch, row).
    slots: Vec<(u32, u32)>,
    counts: Vec<u32>,
    reservation: MemoryReservation,
    /// A quarter of a bounded pool, shared between the partitions, leaves the sort the plan
    /// falls back to room to start.
    budget: usize,
}

impl TopK {
    fn new(exec: &PartitionTopKExec, context: &TaskContext, partition: usize) -> Result<TopK> {
        let reservation = MemoryConsumer::new(format!("PartitionTopKExec[{partition}]")).register(context.memory_pool());
        let partitions = exec.properties.partitioning.partition_count().max(1);
        let budget = match context.memory_pool().memory_limit() {
            MemoryLimit::Finite(limit) => limit / 4 / partitions,
            _ => usize::MAX,
        };
        let input = exec.input.schema();
        let key_fields: Vec<_> = exec.partition_by.iter().map(|e| e.return_field(&input)).collect::<Result<_>>()?;
        let key_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields));
        let order_fields: Vec<SortField> =
            exec.order_by.iter().map(|s| Ok(SortField::new_with_options(s.expr.data_type(&input)?, s.options))).collect::<Result<_>>()?;
        Ok(TopK {
            partition_by: exec.partition_by.clone(),
            order_by: exec.order_by.iter().map(|s| s.expr.clone()).collect(),
            k: exec.k,
            groups: new_group_values(key_schema, &GroupOrdering::None)?,
            ids: vec![],
            order: RowConverter::new(order_fields)?,
            batches: vec![],
            keys: vec![],
            retained_rows: 0,
            slots: vec![],
            counts: vec![],
            reservation,
            budget,
        })
    }

    /// Keeps what `batch` brings to the first rows of its partitions; refuses it, keeping
    /// nothing, when the memory pool or the budget has no room for it.
    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = self.order.convert_columns(&arrays(&self.order_by, batch)?)?;
        // Group ids and slots: about 24 bytes a row.
        let more = batch.get_array_memory_size() + keys.size() + 24 * n;
        if self.reservation.size() + more > self.budget {
            return Err(DataFusionError::ResourcesExhausted(format!("{} over its budget", self.reservation.consumer().name())));
        }
        self.reservation.try_grow(more)?;
        self.groups.intern(&arrays(&self.partition_by, batch)?, &mut self.ids)?;
        self.counts.resize(self.groups.len(), 0);
        self.slots.resize(self.groups.len() * self.k, (0, 0));
        let b = self.batches.len() as u32;
        self.batches.push(batch.clone());
        self.keys.push(keys);
        self.retained_rows += n;
        let (k, all_keys) = (self.k, &self.keys);
        let row = |(b, r): (u32, u32)| all_keys[b as usize].row(r as usize);
        for (r, &g) in self.ids.iter().enumerate() {
            let (slots, count) = (&mut self.slots[g * k..(g + 1) * k], &mut self.counts[g]);
            let new = all_keys[b as usize].row(r);
            let mut at = *count as usize;
            if at == k {
                if new >= row(slots[k - 1]) {
                    continue;
                }
                at = k - 1;
            } else {
                *count += 1;
            }
            while at > 0 && new < row(slots[at - 1]) {
                slots[at] = slots[at - 1];
                at -= 1;
            }
            slots[at] = (b, r as u32);
        }
        let kept = self.counts.iter().map(|&c| c as usize).sum::<usize>();
        if self.retained_rows >= COMPACT_MIN_ROWS.max(2 * kept) {
            self.compact()?;
        }
        Ok(())
    }

    /// Copies the kept rows, partition by partition and best first, into one batch.
    fn compact(&mut self) -> Result<()> {
        let mut from = Vec::new();
        let mut at = 0u32;
        for (g, &count) in self.counts.iter().enumerate() {
            for slot in &mut self.slots[g * self.k..g * self.k + count as usize] {
                from.push((slot.0 as usize, slot.1 as usize));
                *slot = (0, at);
                at += 1;
            }
        }
        let schema = self.batches[0].schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn datafusion::arrow::array::Array> = self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &from)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema, columns)?;
        let keys = self.order.convert_columns(&arrays(&self.order_by, &batch)?)?;
        self.reservation.resize(batch.get_array_memory_size() + keys.size() + 24 * batch.num_rows());
        self.retained_rows = batch.num_rows();
        self.batches = vec![batch];
        self.keys = vec![keys];
        Ok(())
    }

    /// The kept rows, batch by batch as they were read, with their row numbers. Gives the
    /// memory back as the batches are dropped.
    fn kept(self) -> impl Iterator<Item = Result<(RecordBatch, UInt64Array)>> + Send {
        let mut numbers: Vec<Vec<u64>> = self.batches.iter().map(|b| vec![0; b.num_rows()]).collect();
        for (g, &count) in self.counts.iter().enumerate() {
            for (j, &(b, r)) in self.slots[g * self.k..g * self.k + count as usize].iter().enumerate() {
                numbers[b as usize][r as usize] = j as u64 + 1;
            }
        }
        let reservation = self.reservation;
        self.batches.into_iter().zip(numbers).map(move |(batch, numbers)| {
            reservation.shrink(reservation.size().min(batch.get_array_memory_size()));
            let numbers = UInt64Array::from(numbers);
            if !numbers.values().contains(&0) {
                return Ok((batch, numbers));
            }
            let kept = datafusion::arrow::compute::kernels::cmp::neq(&numbers, &UInt64Array::new_scalar(0))?;
            let numbers = datafusion::arrow::compute::filter(&numbers, &kept)?;
            Ok((datafusion::arrow::compute::filter_record_batch(&batch, &kept)?, numbers.as_primitive().clone()))
        })
    }

    /// The kept rows with their row numbers.
    fn finish(self, schema: SchemaRef) -> impl Iterator<Item = Result<RecordBatch>> + Send {
        self.kept().map(move |kept| {
            let (batch, numbers) = kept?;
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(numbers));
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
    }
}
