{# dbt's built-in macros, as kiln ships them. Per-dialect variants follow dbt-adapters:
   `default__` is the ANSI/Postgres form, `postgres__`, `bigquery__` and `datafusion__` override it. #}

{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ return(adapter.dispatch('generate_schema_name', 'dbt')(custom_schema_name, node)) }}
{%- endmacro %}

{% macro default__generate_schema_name(custom_schema_name, node) -%}
    {%- set default_schema = target.schema -%}
    {%- if custom_schema_name is none -%}
        {{ default_schema }}
    {%- else -%}
        {{ default_schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

{% macro generate_schema_name_for_env(custom_schema_name, node) -%}
    {%- set default_schema = target.schema -%}
    {%- if target.name == 'prod' and custom_schema_name is not none -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ default_schema }}
    {%- endif -%}
{%- endmacro %}

{% macro generate_alias_name(custom_alias_name=none, node=none) -%}
    {{ return(adapter.dispatch('generate_alias_name', 'dbt')(custom_alias_name, node)) }}
{%- endmacro %}

{% macro default__generate_alias_name(custom_alias_name=none, node=none) -%}
    {%- if custom_alias_name -%}
        {{ custom_alias_name | trim }}
    {%- elif node.version -%}
        {{ return(node.name ~ "_v" ~ (node.version | replace(".", "_"))) }}
    {%- else -%}
        {{ node.name }}
    {%- endif -%}
{%- endmacro %}

{% macro generate_database_name(custom_database_name=none, node=none) -%}
    {{ return(adapter.dispatch('generate_database_name', 'dbt')(custom_database_name, node)) }}
{%- endmacro %}

{% macro default__generate_database_name(custom_database_name=none, node=none) -%}
    {%- set default_database = target.database -%}
    {%- if custom_database_name is none -%}
        {{ default_database }}
    {%- else -%}
        {{ custom_database_name }}
    {%- endif -%}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
    {% do return(adapter.dispatch('get_where_subquery', 'dbt')(relation)) %}
{%- endmacro %}

{% macro default__get_where_subquery(relation) -%}
    {% set where = config.get('where', '') %}
    {% if where %}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {% do return(filtered) %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}

{# ---- generic data tests ---- #}

{% test not_null(model, column_name) %}
    {{ adapter.dispatch('test_not_null', 'dbt')(model, column_name) }}
{% endtest %}

{% macro default__test_not_null(model, column_name) %}
{% set column_list = '*' if should_store_failures() else column_name %}
select {{ column_list }}
from {{ model }}
where {{ column_name }} is null
{% endmacro %}

{% test unique(model, column_name) %}
    {{ adapter.dispatch('test_unique', 'dbt')(model, column_name) }}
{% endtest %}

{% macro default__test_unique(model, column_name) %}
select
    {{ column_name }} as unique_field,
    count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
group by {{ column_name }}
having count(*) > 1
{% endmacro %}

{% test accepted_values(model, column_name, values, quote=True) %}
    {{ adapter.dispatch('test_accepted_values', 'dbt')(model, column_name, values, quote) }}
{% endtest %}

{% macro default__test_accepted_values(model, column_name, values, quote=True) %}
with all_values as (
    select
        {{ column_name }} as value_field,
        count(*) as n_records
    from {{ model }}
    group by {{ column_name }}
)
select *
from all_values
where value_field not in (
    {% for value in values -%}
        {% if quote -%}
        '{{ value }}'
        {%- else -%}
        {{ value }}
        {%- endif -%}
        {%- if not loop.last -%},{%- endif %}
    {%- endfor %}
)
{% endmacro %}

{% test relationships(model, column_name, to, field) %}
    {{ adapter.dispatch('test_relationships', 'dbt')(model, column_name, to, field) }}
{% endtest %}

{% macro default__test_relationships(model, column_name, to, field) %}
with child as (
    select {{ column_name }} as from_field
    from {{ model }}
    where {{ column_name }} is not null
),
parent as (
    select {{ field }} as to_field
    from {{ to }}
)
select
    from_field
from child
left join parent
    on child.from_field = parent.to_field
where parent.to_field is null
{% endmacro %}

{# ---- cross-database macros ---- #}

{% macro type_string() -%}{{ return(adapter.dispatch('type_string', 'dbt')()) }}{%- endmacro %}
{% macro default__type_string() -%}{{ return(api.Column.translate_type("string")) }}{%- endmacro %}
{% macro type_timestamp() -%}{{ return(adapter.dispatch('type_timestamp', 'dbt')()) }}{%- endmacro %}
{% macro default__type_timestamp() -%}{{ return(api.Column.translate_type("timestamp")) }}{%- endmacro %}
{% macro postgres__type_timestamp() -%}{{ return("timestamp without time zone") }}{%- endmacro %}
{% macro type_float() -%}{{ return(adapter.dispatch('type_float', 'dbt')()) }}{%- endmacro %}
{% macro default__type_float() -%}{{ return(api.Column.translate_type("float")) }}{%- endmacro %}
{% macro type_numeric() -%}{{ return(adapter.dispatch('type_numeric', 'dbt')()) }}{%- endmacro %}
{% macro default__type_numeric() -%}{{ return(api.Column.numeric_type("numeric", 28, 6)) }}{%- endmacro %}
{% macro bigquery__type_numeric() -%}{{ return("numeric") }}{%- endmacro %}
{% macro datafusion__type_numeric() -%}{{ return("decimal(28,6)") }}{%- endmacro %}
{% macro type_bigint() -%}{{ return(adapter.dispatch('type_bigint', 'dbt')()) }}{%- endmacro %}
{% macro default__type_bigint() -%}{{ return(api.Column.translate_type("bigint")) }}{%- endmacro %}
{% macro bigquery__type_bigint() -%}{{ return("int64") }}{%- endmacro %}
{% macro type_int() -%}{{ return(adapter.dispatch('type_int', 'dbt')()) }}{%- endmacro %}
{% macro default__type_int() -%}{{ return(api.Column.translate_type("integer")) }}{%- endmacro %}
{% macro bigquery__type_int() -%}{{ return("int64") }}{%- endmacro %}
{% macro type_boolean() -%}{{ return(adapter.dispatch('type_boolean', 'dbt')()) }}{%- endmacro %}
{% macro default__type_boolean() -%}{{ return(api.Column.translate_type("boolean")) }}{%- endmacro %}

{% macro date_trunc(datepart, date) -%}{{ return(adapter.dispatch('date_trunc', 'dbt')(datepart, date)) }}{%- endmacro %}
{% macro default__date_trunc(datepart, date) -%}date_trunc('{{datepart}}', {{date}}){%- endmacro %}
{% macro bigquery__date_trunc(datepart, date) -%}timestamp_trunc(cast({{date}} as timestamp), {{datepart}}){%- endmacro %}

{% macro datediff(first_date, second_date, datepart) -%}{{ return(adapter.dispatch('datediff', 'dbt')(first_date, second_date, datepart)) }}{%- endmacro %}
{% macro default__datediff(first_date, second_date, datepart) -%}datediff({{ datepart }}, {{ first_date }}, {{ second_date }}){%- endmacro %}
{% macro datafusion__datediff(first_date, second_date, datepart) -%}datediff('{{ datepart }}', {{ first_date }}, {{ second_date }}){%- endmacro %}
{% macro bigquery__datediff(first_date, second_date, datepart) -%}
    datetime_diff(cast({{second_date}} as datetime), cast({{first_date}} as datetime), {{datepart}})
{%- endmacro %}
{% macro postgres__datediff(first_date, second_date, datepart) -%}
    {%- if datepart == 'year' -%}
        (date_part('year', ({{second_date}})::date) - date_part('year', ({{first_date}})::date))
    {%- elif datepart == 'quarter' -%}
        ({{ datediff(first_date, second_date, 'year') }} * 4 + date_part('quarter', ({{second_date}})::date) - date_part('quarter', ({{first_date}})::date))
    {%- elif datepart == 'month' -%}
        ({{ datediff(first_date, second_date, 'year') }} * 12 + date_part('month', ({{second_date}})::date) - date_part('month', ({{first_date}})::date))
    {%- elif datepart == 'day' -%}
        (({{second_date}})::date - ({{first_date}})::date)
    {%- elif datepart == 'week' -%}
        ({{ datediff(first_date, second_date, 'day') }} / 7 + case
            when date_part('dow', ({{first_date}})::timestamp) <= date_part('dow', ({{second_date}})::timestamp) then
                case when {{first_date}} <= {{second_date}} then 0 else -1 end
            else
                case when {{first_date}} <= {{second_date}} then 1 else 0 end
        end)
    {%- elif datepart == 'hour' -%}
        ({{ datediff(first_date, second_date, 'day') }} * 24 + date_part('hour', ({{second_date}})::timestamp) - date_part('hour', ({{first_date}})::timestamp))
    {%- elif datepart == 'minute' -%}
        ({{ datediff(first_date, second_date, 'hour') }} * 60 + date_part('minute', ({{second_date}})::timestamp) - date_part('minute', ({{first_date}})::timestamp))
    {%- elif datepart == 'second' -%}
        ({{ datediff(first_date, second_date, 'minute') }} * 60 + floor(date_part('second', ({{second_date}})::timestamp)) - floor(date_part('second', ({{first_date}})::timestamp)))
    {%- else -%}
        {{ exceptions.raise_compiler_error("Unsupported datepart for macro datediff in postgres: " ~ datepart) }}
    {%- endif -%}
{%- endmacro %}

{% macro dateadd(datepart, interval, from_date_or_timestamp) -%}{{ return(adapter.dispatch('dateadd', 'dbt')(datepart, interval, from_date_or_timestamp)) }}{%- endmacro %}
{% macro default__dateadd(datepart, interval, from_date_or_timestamp) -%}dateadd({{ datepart }}, {{ interval }}, {{ from_date_or_timestamp }}){%- endmacro %}
{% macro postgres__dateadd(datepart, interval, from_date_or_timestamp) -%}{{ from_date_or_timestamp }} + ((interval '1 {{ datepart }}') * ({{ interval }})){%- endmacro %}
{% macro datafusion__dateadd(datepart, interval, from_date_or_timestamp) -%}dateadd('{{ datepart }}', {{ interval }}, {{ from_date_or_timestamp }}){%- endmacro %}
{% macro datafusion__last_day(date, datepart) -%}last_day({{ date }}, '{{ datepart }}'){%- endmacro %}
{% macro bigquery__dateadd(datepart, interval, from_date_or_timestamp) -%}datetime_add(cast( {{ from_date_or_timestamp }} as datetime), interval {{ interval }} {{ datepart }}){%- endmacro %}

{% macro concat(fields) -%}{{ return(adapter.dispatch('concat', 'dbt')(fields)) }}{%- endmacro %}
{% macro default__concat(fields) -%}{{ fields|join(' || ') }}{%- endmacro %}
{% macro bigquery__concat(fields) -%}concat({{ fields|join(', ') }}){%- endmacro %}

{% macro hash(field) -%}{{ return(adapter.dispatch('hash', 'dbt')(field)) }}{%- endmacro %}
{% macro default__hash(field) -%}md5(cast({{ field }} as {{ api.Column.translate_type('string') }})){%- endmacro %}
{% macro bigquery__hash(field) -%}to_hex({{dbt.default__hash(field)}}){%- endmacro %}

{% macro safe_cast(field, type) -%}{{ return(adapter.dispatch('safe_cast', 'dbt')(field, type)) }}{%- endmacro %}
{% macro default__safe_cast(field, type) -%}cast({{field}} as {{type}}){%- endmacro %}
{% macro datafusion__safe_cast(field, type) -%}try_cast({{field}} as {{type}}){%- endmacro %}
{% macro bigquery__safe_cast(field, type) -%}safe_cast({{field}} as {{type}}){%- endmacro %}

{% macro cast(field, type) -%}{{ return(adapter.dispatch('cast', 'dbt')(field, type)) }}{%- endmacro %}
{% macro default__cast(field, type) -%}cast({{field}} as {{type}}){%- endmacro %}

{% macro current_timestamp() -%}{{ return(adapter.dispatch('current_timestamp', 'dbt')()) }}{%- endmacro %}
{% macro default__current_timestamp() -%}current_timestamp{%- endmacro %}
{% macro postgres__current_timestamp() -%}now(){%- endmacro %}
{% macro datafusion__current_timestamp() -%}now(){%- endmacro %}
{% macro bigquery__current_timestamp() -%}current_timestamp(){%- endmacro %}
{% macro duckdb__current_timestamp() -%}now(){%- endmacro %}

{# The time a snapshot stamps its changes with, and its row hash: a project may override them. #}
{% macro snapshot_get_time() -%}{{ return(adapter.dispatch('snapshot_get_time', 'dbt')()) }}{%- endmacro %}
{% macro default__snapshot_get_time() -%}{{ current_timestamp() }}{%- endmacro %}
{% macro postgres__snapshot_get_time() -%}{{ current_timestamp() }}::timestamp without time zone{%- endmacro %}
{% macro datafusion__snapshot_get_time() -%}cast({{ current_timestamp() }} as timestamp){%- endmacro %}
{% macro duckdb__snapshot_get_time() -%}{{ current_timestamp() }}::timestamp{%- endmacro %}
{% macro snapshot_hash_arguments(args) -%}{{ return(adapter.dispatch('snapshot_hash_arguments', 'dbt')(args)) }}{%- endmacro %}
{% macro default__snapshot_hash_arguments(args) -%}
md5({%- for arg in args -%}coalesce(cast({{ arg }} as varchar ), ''){% if not loop.last %} || '|' || {% endif %}{%- endfor -%})
{%- endmacro %}
{% macro bigquery__snapshot_hash_arguments(args) -%}
to_hex(md5(concat({%- for arg in args -%}coalesce(cast({{ arg }} as string), ''){% if not loop.last %}, '|',{% endif -%}{%- endfor -%})))
{%- endmacro %}

{% macro split_part(string_text, delimiter_text, part_number) -%}{{ return(adapter.dispatch('split_part', 'dbt')(string_text, delimiter_text, part_number)) }}{%- endmacro %}
{% macro default__split_part(string_text, delimiter_text, part_number) -%}split_part({{ string_text }}, {{ delimiter_text }}, {{ part_number }}){%- endmacro %}
{% macro bigquery__split_part(string_text, delimiter_text, part_number) -%}
    {%- if part_number >= 0 -%}
        split({{ string_text }}, {{ delimiter_text }})[safe_offset({{ part_number - 1 }})]
    {%- else -%}
        split({{ string_text }}, {{ delimiter_text }})[safe_offset(length({{ string_text }}) - length(replace({{ string_text }}, {{ delimiter_text }}, '')) + 1 + {{ part_number }})]
    {%- endif -%}
{%- endmacro %}

{% macro listagg(measure, delimiter_text="','", order_by_clause=none, limit_num=none) -%}{{ return(adapter.dispatch('listagg', 'dbt')(measure, delimiter_text, order_by_clause, limit_num)) }}{%- endmacro %}
{% macro default__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    listagg({{ measure }}, {{ delimiter_text }}) {%- if order_by_clause %} within group ({{ order_by_clause }}){%- endif %}
{%- endmacro %}
{% macro postgres__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {% if limit_num -%}
    array_to_string((array_agg({{ measure }} {% if order_by_clause -%}{{ order_by_clause }}{%- endif %}))[1:{{ limit_num }}], {{ delimiter_text }})
    {%- else -%}
    string_agg({{ measure }}, {{ delimiter_text }} {% if order_by_clause -%}{{ order_by_clause }}{%- endif %})
    {%- endif %}
{%- endmacro %}
{% macro datafusion__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    string_agg({{ measure }}, {{ delimiter_text }} {% if order_by_clause -%}{{ order_by_clause }}{%- endif %})
{%- endmacro %}
{% macro bigquery__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    string_agg({{ measure }}, {{ delimiter_text }} {% if order_by_clause -%}{{ order_by_clause }}{%- endif %} {% if limit_num -%}limit {{ limit_num }}{%- endif %})
{%- endmacro %}

{% macro any_value(expression) -%}{{ return(adapter.dispatch('any_value', 'dbt')(expression)) }}{%- endmacro %}
{% macro default__any_value(expression) -%}any_value({{ expression }}){%- endmacro %}
{% macro postgres__any_value(expression) -%}min({{ expression }}){%- endmacro %}
{% macro datafusion__any_value(expression) -%}first_value({{ expression }}){%- endmacro %}
{% macro duckdb__any_value(expression) -%}arbitrary({{ expression }}){%- endmacro %}

{% macro bool_or(expression) -%}{{ return(adapter.dispatch('bool_or', 'dbt')(expression)) }}{%- endmacro %}
{% macro default__bool_or(expression) -%}bool_or({{ expression }}){%- endmacro %}
{% macro bigquery__bool_or(expression) -%}logical_or({{ expression }}){%- endmacro %}

{% macro cast_bool_to_text(field) -%}{{ return(adapter.dispatch('cast_bool_to_text', 'dbt')(field)) }}{%- endmacro %}
{% macro default__cast_bool_to_text(field) -%}cast({{ field }} as {{ api.Column.translate_type('string') }}){%- endmacro %}

{% macro escape_single_quotes(expression) -%}{{ return(adapter.dispatch('escape_single_quotes', 'dbt')(expression)) }}{%- endmacro %}
{% macro default__escape_single_quotes(expression) -%}{{ expression | replace("'","''") }}{%- endmacro %}
{% macro bigquery__escape_single_quotes(expression) -%}{{ expression | replace("'", "\\'") }}{%- endmacro %}

{% macro string_literal(value) -%}{{ return(adapter.dispatch('string_literal', 'dbt')(value)) }}{%- endmacro %}
{% macro default__string_literal(value) -%}'{{ value }}'{%- endmacro %}

{% macro last_day(date, datepart) -%}{{ return(adapter.dispatch('last_day', 'dbt')(date, datepart)) }}{%- endmacro %}
{% macro default__last_day(date, datepart) -%}
    cast({{ dbt.dateadd('day', '-1', dbt.dateadd(datepart, '1', dbt.date_trunc(datepart, date))) }} as date)
{%- endmacro %}
{% macro postgres__last_day(date, datepart) -%}
    {%- if datepart == 'quarter' -%}
    cast({{ dbt.dateadd('day', '-1', dbt.dateadd('month', '3', dbt.date_trunc(datepart, date))) }} as date)
    {%- else -%}
    {{ dbt.default__last_day(date, datepart) }}
    {%- endif -%}
{%- endmacro %}
{% macro bigquery__last_day(date, datepart) -%}cast(last_day({{ date }}, {{ datepart }}) as date){%- endmacro %}

{% macro position(substring_text, string_text) -%}{{ return(adapter.dispatch('position', 'dbt')(substring_text, string_text)) }}{%- endmacro %}
{% macro default__position(substring_text, string_text) -%}position({{ substring_text }} in {{ string_text }}){%- endmacro %}
{% macro bigquery__position(substring_text, string_text) -%}strpos({{ string_text }}, {{ substring_text }}){%- endmacro %}

{% macro replace(field, old_chars, new_chars) -%}{{ return(adapter.dispatch('replace', 'dbt')(field, old_chars, new_chars)) }}{%- endmacro %}
{% macro default__replace(field, old_chars, new_chars) -%}replace({{ field }}, {{ old_chars }}, {{ new_chars }}){%- endmacro %}

{% macro right(string_text, length_expression) -%}{{ return(adapter.dispatch('right', 'dbt')(string_text, length_expression)) }}{%- endmacro %}
{% macro default__right(string_text, length_expression) -%}right({{ string_text }}, {{ length_expression }}){%- endmacro %}
{% macro bigquery__right(string_text, length_expression) -%}
    case when {{ length_expression }} = 0 then '' else substr({{ string_text }}, -1 * ({{ length_expression }})) end
{%- endmacro %}

{% macro length(expression) -%}{{ return(adapter.dispatch('length', 'dbt')(expression)) }}{%- endmacro %}
{% macro default__length(expression) -%}length({{ expression }}){%- endmacro %}

{% macro except() -%}{{ return(adapter.dispatch('except', 'dbt')()) }}{%- endmacro %}
{% macro default__except() -%}except{%- endmacro %}
{% macro bigquery__except() -%}except distinct{%- endmacro %}

{% macro intersect() -%}{{ return(adapter.dispatch('intersect', 'dbt')()) }}{%- endmacro %}
{% macro default__intersect() -%}intersect{%- endmacro %}
{% macro bigquery__intersect() -%}intersect distinct{%- endmacro %}

{% macro date(year, month, day) -%}{{ return(adapter.dispatch('date', 'dbt')(year, month, day)) }}{%- endmacro %}
{% macro default__date(year, month, day) -%}
    {%- set dt = modules.datetime.date(year, month, day) -%}
    {%- set iso_8601_formatted_date = dt.strftime('%Y-%m-%d') -%}
    to_date('{{ iso_8601_formatted_date }}', 'YYYY-MM-DD')
{%- endmacro %}
{% macro datafusion__date(year, month, day) -%}
    cast('{{ modules.datetime.date(year, month, day).strftime('%Y-%m-%d') }}' as date)
{%- endmacro %}
{% macro bigquery__date(year, month, day) -%}
    date({{ year }}, {{ month }}, {{ day }})
{%- endmacro %}

{% macro array_construct(inputs=[], data_type=api.Column.translate_type('integer')) -%}{{ return(adapter.dispatch('array_construct', 'dbt')(inputs, data_type)) }}{%- endmacro %}
{% macro default__array_construct(inputs, data_type) -%}
    {% if inputs|length > 0 %}array[ {{ inputs|join(' , ') }} ]{% else %}array[]::{{data_type}}[]{% endif %}
{%- endmacro %}
{% macro bigquery__array_construct(inputs, data_type) -%}
    {% if inputs|length > 0 %}[ {{ inputs|join(' , ') }} ]{% else %}ARRAY<{{data_type}}>[]{% endif %}
{%- endmacro %}

{% macro run_hooks(hooks, inside_transaction=True) -%}{%- endmacro %}

{# ---- DuckDB variants (dbt-duckdb renders these differently) ---- #}

{% macro duckdb__datediff(first_date, second_date, datepart) -%}
    {%- if datepart == 'week' -%}
        ({{ datediff(first_date, second_date, 'day') }} // 7 + case
            when date_part('dow', ({{ first_date }})::timestamp) <= date_part('dow', ({{ second_date }})::timestamp) then
                case when {{ first_date }} <= {{ second_date }} then 0 else -1 end
            else
                case when {{ first_date }} <= {{ second_date }} then 1 else 0 end
        end)
    {%- else -%}
        (date_diff('{{ datepart }}', {{ first_date }}::timestamp, {{ second_date }}::timestamp ))
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__dateadd(datepart, interval, from_date_or_timestamp) -%}
    {%- set unit = datepart | lower -%}
    {%- set factor, unit = {'quarter': (3, 'month'), 'week': (7, 'day')}.get(unit, (none, unit)) -%}
    {%- if factor -%}
        ({{ from_date_or_timestamp }} + (cast({{ interval }} as bigint) * {{ factor }}) * interval 1 {{ unit }})
    {%- else -%}
        ({{ from_date_or_timestamp }} + cast({{ interval }} as bigint) * interval 1 {{ unit }})
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__last_day(date, datepart) -%}{{ dbt.postgres__last_day(date, datepart) }}{%- endmacro %}

{% macro duckdb__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {%- set ordered = measure ~ (' ' ~ order_by_clause if order_by_clause else '') -%}
    {%- if limit_num -%}
    list_aggr((array_agg({{ ordered }}))[1:{{ limit_num }}], 'string_agg', {{ delimiter_text }})
    {%- else -%}
    string_agg({{ measure }}, {{ delimiter_text }} {{ order_by_clause or '' }})
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__split_part(string_text, delimiter_text, part_number) -%}
    string_split({{ string_text }}, {{ delimiter_text }})[ {{ part_number }} ]
{%- endmacro %}
