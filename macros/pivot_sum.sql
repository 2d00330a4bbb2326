{#- One `sum(case when <column> = '<value>' then <amount> else 0 end)` per value. -#}
{% macro pivot_sum(column, values, amount, suffix='_amount') -%}
    {%- for value in values %}
    sum(case when {{ column }} = '{{ value }}' then {{ amount }} else 0 end) as {{ value }}{{ suffix }}
    {{- ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
