{#- Cents (integer) to dollars (2 decimals), per engine. -#}
{% macro cents_to_dollars(column_name) -%}
    {{ return(adapter.dispatch('cents_to_dollars')(column_name)) }}
{%- endmacro %}

{% macro default__cents_to_dollars(column_name) -%}
    round(cast({{ column_name }} as numeric) / 100, 2)
{%- endmacro %}

{% macro bigquery__cents_to_dollars(column_name) -%}
    round(cast({{ column_name }} as numeric) / 100, 2)
{%- endmacro %}

{% macro datafusion__cents_to_dollars(column_name) -%}
    round(cast({{ column_name }} as double) / 100, 2)
{%- endmacro %}
