{{ config(materialized='view') }}

select
    order_date,
    count(*) as orders,
    sum(amount) as revenue
from {{ ref('fct_orders') }}
where status in ('shipped', 'completed')
group by order_date
