{{
  config(
    materialized='incremental',
    unique_key='order_id',
    incremental_strategy='merge',
    on_schema_change='append_new_columns'
  )
}}

with items as (
    select
        i.order_id,
        sum(i.quantity) as items,
        sum(i.quantity * p.price) as items_value
    from {{ ref('stg_order_items') }} as i
    join {{ ref('stg_products') }} as p on p.product_id = i.product_id
    group by i.order_id
)

select
    o.order_id,
    o.customer_id,
    o.order_date,
    o.status,
    coalesce(items.items, 0) as items,
    coalesce(items.items_value, 0) as items_value,
    {%- for method in var('payment_methods') %}
    coalesce(pay.{{ method }}_amount, 0) as {{ method }}_amount,
    {%- endfor %}
    coalesce(pay.total_paid, 0) as amount
from {{ ref('stg_orders') }} as o
left join items on items.order_id = o.order_id
left join {{ ref('int_order_payments') }} as pay on pay.order_id = o.order_id
where o.order_date >= '{{ var("orders_start_date") }}'
{% if is_incremental() %}
  and o.order_date >= (select max(order_date) from {{ this }})
{% endif %}
