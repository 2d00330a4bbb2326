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
//! text is compared by its bytes; each slot holds its key, so a probe reads one slot. Over a
//! warehouse table, the key column is read as Parquet stores it, a dictionary and a code per
//! row, and the group of each code is found once. `count` and `sum` of BIGINT accumulate in
//! loops of their own (see [`Accumulator`]); every other aggregate is DataFusion's own group
//! accumulator. Either way its output is the partial state
//! the final aggregation expects, and the results are DataFusion's. Integer keys stay with
//! DataFusion, whose interner for them is already direct (they are mostly ids, with many
//! groups).
//!
//! Past [`MAX_GROUPS`] groups it emits the state of the groups it has and hands the rest of its
//! input to the `AggregateExec` it replaced (`handed_over` in `EXPLAIN ANALYZE`): with many
//! groups DataFusion's interner is the better one, and it has the memory accounting and early
//! emission that many groups need. Below that, its groups are not reserved from the memory
//! pool: a few MB at most.

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, DictionaryArray, Int64Array, PrimitiveArray, RecordBatch, StringArray, StringViewArray,
    StringViewBuilder,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, UInt8Type, UInt16Type, UInt32Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Groups one partition may hold before it hands its input over to DataFusion's aggregation.
const MAX_GROUPS: usize = 1 << 14;

/// Replaces a partial `AggregateExec` grouped by one `Utf8View` column, without
/// grouping sets, `FILTER`, ordered or distinct aggregates or a limit, with a
/// [`OneKeyAggregateExec`]. Where its input is a scan of warehouse tables (under `warehouse`)
/// and no aggregate reads the key, the key is read as a dictionary (see [`dictionary_scan`]).
#[derive(Debug)]
pub struct OneKeyAggregateRule {
    pub warehouse: std::path::PathBuf,
}

impl PhysicalOptimizerRule for OneKeyAggregateRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| Ok(self.replacement(&node).map_or_else(|| Transformed::no(node), Transformed::yes))).data()
    }

    fn name(&self) -> &str {
        "kiln_one_key_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl OneKeyAggregateRule {
    fn replacement(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
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
        if !(plain && text) {
            return None;
        }
        let input = self.input_by_code(aggregate, key).unwrap_or_else(|| aggregate.input().clone());
        Some(Arc::new(OneKeyAggregateExec { replaced: node.clone(), input, metrics: ExecutionPlanMetricsSet::new() }))
    }

    /// The aggregate's input with its key read as a dictionary, where the input is a scan of
    /// warehouse tables and no aggregate reads the key.
    fn input_by_code(&self, aggregate: &AggregateExec, key: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn ExecutionPlan>> {
        let column = key.downcast_ref::<Column>()?;
        let arguments = aggregate.aggr_expr().iter().flat_map(|a| a.expressions());
        if arguments.flat_map(|e| collect_columns(&e)).any(|c| c.index() == column.index()) {
            return None;
        }
        dictionary_input(aggregate.input(), column.index(), &self.warehouse)
    }
}

/// `plan` with its output column `column` read as a dictionary: a Parquet scan of warehouse
/// tables (see [`dictionary_scan`]), or a round-robin repartition of one.
fn dictionary_input(plan: &Arc<dyn ExecutionPlan>, column: usize, warehouse: &std::path::Path) -> Option<Arc<dyn ExecutionPlan>> {
    match plan.downcast_ref::<RepartitionExec>() {
        Some(repartition) if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_)) => {
            let input = dictionary_input(repartition.input(), column, warehouse)?;
            replace_children_if_necessary(plan.clone(), vec![input]).ok()
        }
        Some(_) => None,
        None => dictionary_scan(plan, column, warehouse),
    }
}

/// `scan` (a Parquet scan of warehouse tables, without a filter) with its output column
/// `column` read as `Dictionary(Int32, Utf8)`: Parquet's reader then gives each text column
/// chunk's dictionary and the rows' codes, where as `Utf8View` it copies a view per row, and
/// [`Table::intern_dictionary`] finds a group per code instead of per row. Only kiln's own
/// tables: each version is one file with the table's schema, which the reader is told (as
/// each file's schema) so that it reads the dictionary instead of casting to it.
fn dictionary_scan(scan: &Arc<dyn ExecutionPlan>, column: usize, warehouse: &std::path::Path) -> Option<Arc<dyn ExecutionPlan>> {
    let config = scan.downcast_ref::<DataSourceExec>()?.data_source().downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<ParquetSource>()?;
    let projection = source.projection()?;
    let table_column = projection.as_ref().get(column)?.expr.downcast_ref::<Column>()?.index();
    let file_schema = source.table_schema().file_schema();
    let field = file_schema.fields().get(table_column)?;
    let own = config
        .file_groups
        .iter()
        .flat_map(|g| g.iter())
        .all(|f| f.arrow_schema.is_none() && std::path::Path::new("/").join(f.object_meta.location.as_ref()).starts_with(warehouse));
    if source.filter().is_some() || *field.data_type() != DataType::Utf8View || !own {
        return None;
    }
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = file_schema.fields().to_vec();
    fields[table_column] = Arc::new(field.as_ref().clone().with_data_type(dictionary));
    let read_as = Arc::new(Schema::new_with_metadata(fields, file_schema.metadata().clone()));
    let table =
        TableSchema::builder(read_as.clone()).with_table_partition_cols(source.table_schema().table_partition_cols().to_vec()).build();
    let mut with_dictionary = ParquetSource::new(table).with_table_parquet_options(source.table_parquet_options().clone());
    if let Some(factory) = source.parquet_file_reader_factory() {
        with_dictionary = with_dictionary.with_parquet_file_reader_factory(factory.clone());
    }
    let with_dictionary = with_dictionary.try_pushdown_projection(projection).ok()??;
    let groups = config
        .file_groups
        .iter()
        .map(|g| FileGroup::new(g.iter().map(|f| f.clone().with_arrow_schema(read_as.clone())).collect()))
        .collect();
    let config = FileScanConfigBuilder::from(config.clone()).with_source(with_dictionary).with_file_groups(groups).build();
    Some(DataSourceExec::from_data_source(config))
}

/// A partial aggregation grouped by one text column (see the module's documentation).
#[derive(Debug)]
pub struct OneKeyAggregateExec {
    /// The partial `AggregateExec` it stands for: its input, aggregates and output schema, and
    /// what runs past [`MAX_GROUPS`].
    replaced: Arc<dyn ExecutionPlan>,
    /// What it reads: the replaced aggregate's input, or the same with the key read as a
    /// dictionary.
    input: Arc<dyn ExecutionPlan>,
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
        let codes = matches!(self.key().data_type(&self.input.schema()), Ok(DataType::Dictionary(..)));
        write!(f, "OneKeyAggregateExec: gby=[{}{}], aggr=[{}]", self.key(), if codes { " by code" } else { "" }, aggregates.join(", "))
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
        vec![&self.input]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>) -> Result<TreeNodeRecursion> {
        self.replaced.apply_expressions(f)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)] // the trait still requires it (DataFusion 55)
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| internal_datafusion_err!("one child expected"))?;
        Ok(Arc::new(OneKeyAggregateExec { replaced: self.replaced.clone(), input, metrics: ExecutionPlanMetricsSet::new() }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
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

/// Runs the replaced `AggregateExec` over `batch` and the rest of `input` (with a key read as
/// a dictionary cast back to the text it planned for).
fn hand_over(
    replaced: &Arc<dyn ExecutionPlan>,
    batch: RecordBatch,
    input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let schema = replaced.downcast_ref::<AggregateExec>().expect("built from an AggregateExec").input_schema();
    let planned = schema.clone();
    let as_planned = move |batch: Result<RecordBatch>| -> Result<RecordBatch> {
        let batch = batch?;
        let columns = batch.columns().iter().zip(planned.fields()).map(|(c, f)| cast(c, f.data_type())).collect::<Result<_, _>>()?;
        Ok(RecordBatch::try_new(planned.clone(), columns)?)
    };
    let replay = futures::stream::iter([Ok(batch)]).chain(input).map(as_planned);
    let leaf = super::partition_top_k::replayed(Box::pin(RecordBatchStreamAdapter::new(schema, replay)))?;
    replace_children_if_necessary(replaced.clone(), vec![leaf])?.execute(0, context)
}

/// The groups of one partition and their accumulators.
struct Groups {
    key: Arc<dyn PhysicalExpr>,
    table: Table,
    ids: Vec<usize>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Accumulator>,
}

impl Groups {
    fn new(exec: &OneKeyAggregateExec) -> Result<Groups> {
        let aggregate = exec.aggregate();
        let input = aggregate.input_schema();
        Ok(Groups {
            key: exec.key().clone(),
            table: Table::default(),
            ids: vec![],
            arguments: aggregate.aggr_expr().iter().map(|a| a.expressions()).collect(),
            accumulators: aggregate.aggr_expr().iter().map(|a| Accumulator::new(a, &input)).collect::<Result<_>>()?,
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
        self.ids.resize(rows, 0);
        match keys.as_dictionary_opt::<Int32Type>() {
            Some(keys) => self.table.intern_dictionary(keys, &mut self.ids),
            None => self.table.intern_views(keys.as_string_view(), &mut self.ids),
        }
        let groups = self.table.len();
        for (accumulator, arguments) in self.accumulators.iter_mut().zip(&self.arguments) {
            accumulator.update(arguments, batch, &self.ids, groups)?;
        }
        Ok(())
    }

    /// The partial aggregation's output for every group so far; the groups are then empty.
    fn emit(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = vec![self.table.key_array()?];
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state()?);
        }
        self.table = Table::default();
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Per-group counters in four lanes: row `i` adds to lane `i % 4`, so consecutive rows of one
/// group do not wait for each other's store (with few groups, most rows follow one of their
/// own group).
type Lanes = Vec<[i64; LANES]>;
const LANES: usize = 4;

/// How one aggregate accumulates: `count` and `sum` of BIGINT in loops of their own over the
/// rows' groups, any other with DataFusion's group accumulator. Either way the state is the one
/// DataFusion's final aggregation expects (for `sum`, wrapping as DataFusion's does).
enum Accumulator {
    /// `count(x)`: each group's non-null rows.
    Count(Lanes),
    /// `sum(x)` of BIGINT: each group's wrapping sum, and whether it saw a value (else NULL).
    /// `argument` is `x` without the widening cast DataFusion puts on a narrower integer.
    Sum {
        sums: Lanes,
        seen: Vec<bool>,
        argument: Arc<dyn PhysicalExpr>,
    },
    DataFusion(Box<dyn GroupsAccumulator>),
}

impl Accumulator {
    fn new(aggregate: &AggregateFunctionExpr, input: &SchemaRef) -> Result<Accumulator> {
        let states: Vec<DataType> = aggregate.state_fields()?.iter().map(|f| f.data_type().clone()).collect();
        let arguments = aggregate.expressions();
        let types: Vec<DataType> = arguments.iter().map(|e| e.data_type(input)).collect::<Result<_>>()?;
        Ok(match (aggregate.fun().name(), types.as_slice(), states.as_slice()) {
            ("count", [_], [DataType::Int64]) => Accumulator::Count(vec![]),
            ("sum", [DataType::Int64], [DataType::Int64]) => {
                Accumulator::Sum { sums: vec![], seen: vec![], argument: unwidened(&arguments[0], input) }
            }
            _ => Accumulator::DataFusion(aggregate.create_groups_accumulator()?),
        })
    }

    fn update(&mut self, arguments: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch, ids: &[usize], groups: usize) -> Result<()> {
        let rows = batch.num_rows();
        match self {
            Accumulator::Count(counts) => {
                counts.resize(groups, [0; LANES]);
                match arguments[0].evaluate(batch)? {
                    ColumnarValue::Scalar(value) if value.is_null() => {}
                    ColumnarValue::Scalar(_) => count(counts, ids, None),
                    ColumnarValue::Array(values) => count(counts, ids, values.logical_nulls().as_ref()),
                }
            }
            Accumulator::Sum { sums, seen, argument } => {
                sums.resize(groups, [0; LANES]);
                seen.resize(groups, false);
                let values = argument.evaluate(batch)?.into_array(rows)?;
                match values.data_type() {
                    DataType::Int8 => sum(sums, seen, ids, values.as_primitive::<Int8Type>()),
                    DataType::Int16 => sum(sums, seen, ids, values.as_primitive::<Int16Type>()),
                    DataType::Int32 => sum(sums, seen, ids, values.as_primitive::<Int32Type>()),
                    DataType::UInt8 => sum(sums, seen, ids, values.as_primitive::<UInt8Type>()),
                    DataType::UInt16 => sum(sums, seen, ids, values.as_primitive::<UInt16Type>()),
                    DataType::UInt32 => sum(sums, seen, ids, values.as_primitive::<UInt32Type>()),
                    _ => sum(sums, seen, ids, values.as_primitive::<Int64Type>()),
                }
            }
            Accumulator::DataFusion(accumulator) => {
                let values: Vec<ArrayRef> = arguments.iter().map(|e| e.evaluate(batch)?.into_array(rows)).collect::<Result<_>>()?;
                accumulator.update_batch(&values, ids, None, groups)?;
            }
        }
        Ok(())
    }

    /// The state of every group so far, in group order; the accumulator is then empty.
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        let total = |lanes: &[i64; LANES]| lanes.iter().fold(0i64, |a, &b| a.wrapping_add(b));
        Ok(match self {
            Accumulator::Count(counts) => {
                let counts: Int64Array = std::mem::take(counts).iter().map(total).collect::<Vec<_>>().into();
                vec![Arc::new(counts)]
            }
            Accumulator::Sum { sums, seen, .. } => {
                let values: Vec<i64> = std::mem::take(sums).iter().map(total).collect();
                let seen = NullBuffer::from(std::mem::take(seen));
                vec![Arc::new(Int64Array::new(values.into(), Some(seen)))]
            }
            Accumulator::DataFusion(accumulator) => accumulator.state(EmitTo::All)?,
        })
    }
}

/// Adds each row that is not null to its group's count.
fn count(counts: &mut Lanes, ids: &[usize], nulls: Option<&NullBuffer>) {
    match nulls {
        None => ids.iter().enumerate().for_each(|(i, &g)| counts[g][i % LANES] += 1),
        Some(nulls) => ids.iter().zip(nulls.iter()).enumerate().for_each(|(i, (&g, valid))| counts[g][i % LANES] += i64::from(valid)),
    }
}

/// `argument` without a cast to BIGINT from a narrower integer (lossless, so summing the
/// narrower values as BIGINT gives the same sums without building the cast column).
fn unwidened(argument: &Arc<dyn PhysicalExpr>, input: &SchemaRef) -> Arc<dyn PhysicalExpr> {
    let narrower = |e: &Arc<dyn PhysicalExpr>| {
        matches!(
            e.data_type(input),
            Ok(DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32)
        )
    };
    match argument.downcast_ref::<CastExpr>() {
        Some(cast) if *cast.cast_type() == DataType::Int64 && narrower(cast.expr()) => cast.expr().clone(),
        _ => argument.clone(),
    }
}

/// Adds each value that is not null to its group's sum (as BIGINT), wrapping on overflow.
fn sum<T: ArrowPrimitiveType>(sums: &mut Lanes, seen: &mut [bool], ids: &[usize], values: &PrimitiveArray<T>)
where
    T::Native: Into<i64>,
{
    let mut add = |(i, (&g, &v)): (usize, (&usize, &T::Native))| {
        sums[g][i % LANES] = sums[g][i % LANES].wrapping_add(v.into());
        seen[g] = true;
    };
    let rows = ids.iter().zip(values.values().iter()).enumerate();
    match values.nulls().filter(|n| n.null_count() > 0) {
        None => rows.for_each(add),
        Some(nulls) => rows.zip(nulls.iter()).filter(|(_, valid)| *valid).for_each(|(row, _)| add(row)),
    }
}

/// The key of a free slot: its low 32 bits, a view's length, are neither a length a view holds
/// inline (up to 12) nor a long text's marker (`u32::MAX`, see [`long_key`]).
const FREE: u128 = (u32::MAX - 1) as u128;

/// Open addressing over group ids. A group's key is 128 bits: a text view (text of up to 12
/// bytes is all in it) or, for longer text, its hash with a length no view has (the text itself
/// is compared too). Each slot holds its key beside its group id, so a probe reads one slot.
#[derive(Default)]
struct Table {
    /// Keys by slot ([`FREE`] where none); a power of two, at most half full.
    slot_keys: Vec<u128>,
    /// Group ids by slot.
    slot_ids: Vec<u32>,
    /// 64 minus log2 of the slot count: a key's slot is the top bits of its hash.
    shift: u32,
    /// Keys by group.
    keys: Vec<u128>,
    /// Bytes of long text keys: (start, end) in `bytes`, by group (empty for other groups).
    long: Vec<(usize, usize)>,
    bytes: Vec<u8>,
    null_group: Option<usize>,
    /// The dictionary of the last batch read as one (kept, so that its address is not another's),
    /// and the group of each of its codes ([`UNSEEN`] for codes not seen yet).
    dictionary: Option<ArrayRef>,
    code_groups: Vec<u32>,
}

/// A code of the dictionary whose group is not known yet.
const UNSEEN: u32 = u32::MAX;

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
        let mask = self.slot_keys.len().wrapping_sub(1);
        let mut slot = slot_of(key, self.shift);
        while let Some(&k) = self.slot_keys.get(slot) {
            if k == key {
                let id = self.slot_ids[slot] as usize;
                if long.is_none_or(|text| self.text(id) == text) {
                    return id;
                }
            } else if k == FREE {
                break;
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
        if 2 * self.keys.len() >= self.slot_keys.len() {
            self.grow();
        } else {
            self.place(id);
        }
        id
    }

    /// Puts group `g` in its slot or the next free one.
    fn place(&mut self, g: usize) {
        let mask = self.slot_keys.len() - 1;
        let mut slot = slot_of(self.keys[g], self.shift);
        while self.slot_keys[slot] != FREE {
            slot = (slot + 1) & mask;
        }
        self.slot_keys[slot] = self.keys[g];
        self.slot_ids[slot] = g as u32;
    }

    fn grow(&mut self) {
        let size = (self.slot_keys.len() * 2).max(64);
        self.shift = 64 - size.trailing_zeros();
        self.slot_keys = vec![FREE; size];
        self.slot_ids = vec![0; size];
        for g in 0..self.keys.len() {
            if Some(g) != self.null_group {
                self.place(g);
            }
        }
    }

    /// Each row's group in `ids` (as many as rows).
    fn intern_views(&mut self, keys: &StringViewArray, ids: &mut [usize]) {
        let buffers = keys.data_buffers();
        match keys.nulls().filter(|n| n.null_count() > 0) {
            None => {
                let views = keys.views();
                let mut row = 0;
                while row < views.len() {
                    row += self.find_short(&views[row..], &mut ids[row..]);
                    if let Some(&view) = views.get(row) {
                        ids[row] = self.intern_view(view, buffers);
                        row += 1;
                    }
                }
            }
            Some(nulls) => ids.iter_mut().zip(keys.views()).zip(nulls.iter()).for_each(|((id, &view), valid)| {
                *id = if valid { self.intern_view(view, buffers) } else { self.null_id() };
            }),
        }
    }

    /// The groups of `views` that are known texts of up to 12 bytes, up to the first that is
    /// not (new, or longer): returns how many. The table does not change here, so the loop
    /// keeps it in registers.
    fn find_short(&self, views: &[u128], ids: &mut [usize]) -> usize {
        let (keys, groups, shift) = (self.slot_keys.as_slice(), self.slot_ids.as_slice(), self.shift);
        let mask = keys.len().wrapping_sub(1);
        for (row, (id, &view)) in ids.iter_mut().zip(views).enumerate() {
            if view as u32 > 12 {
                return row;
            }
            let mut slot = slot_of(view, shift);
            loop {
                match keys.get(slot) {
                    Some(&key) if key == view => break *id = groups[slot] as usize,
                    Some(&key) if key != FREE => slot = (slot + 1) & mask,
                    _ => return row,
                }
            }
        }
        views.len()
    }

    /// The group of a text, by its view: text of up to 12 bytes is all in it; longer text is
    /// in `buffers`, where the view points.
    #[inline(always)]
    fn intern_view(&mut self, view: u128, buffers: &[Buffer]) -> usize {
        let len = view as u32 as usize;
        if len <= 12 {
            return self.intern(view, None);
        }
        let (buffer, offset) = ((view >> 64) as u32 as usize, (view >> 96) as u32 as usize);
        let text = &buffers[buffer][offset..offset + len];
        self.intern(long_key(text), Some(text))
    }

    /// Each row's group in `ids`, by its code: a dictionary's text is interned once, at its
    /// code's first row. Parquet's reader gives one dictionary per column chunk, so most
    /// batches reuse the codes' groups of the batch before.
    fn intern_dictionary(&mut self, keys: &DictionaryArray<Int32Type>, ids: &mut [usize]) {
        let values = keys.values();
        if !self.dictionary.as_ref().is_some_and(|d| Arc::ptr_eq(d, values)) {
            self.dictionary = Some(values.clone());
            self.code_groups = vec![UNSEEN; values.len()];
        }
        let texts = values.as_string::<i32>();
        let codes = keys.keys().values();
        match keys.logical_nulls().filter(|n| n.null_count() > 0) {
            None => ids.iter_mut().zip(codes).for_each(|(id, &code)| *id = self.code_group(texts, code as usize)),
            Some(nulls) => ids.iter_mut().zip(codes).zip(nulls.iter()).for_each(|((id, &code), valid)| {
                *id = if valid { self.code_group(texts, code as usize) } else { self.null_id() };
            }),
        }
    }

    #[inline(always)]
    fn code_group(&mut self, texts: &StringArray, code: usize) -> usize {
        let g = self.code_groups[code];
        if g != UNSEEN {
            return g as usize;
        }
        let text = texts.value(code).as_bytes();
        let g = if text.len() <= 12 {
            let mut view = [0u8; 16];
            view[..4].copy_from_slice(&(text.len() as u32).to_le_bytes());
            view[4..4 + text.len()].copy_from_slice(text);
            self.intern(u128::from_le_bytes(view), None)
        } else {
            self.intern(long_key(text), Some(text))
        };
        self.code_groups[code] = g as u32;
        g
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
