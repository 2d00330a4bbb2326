with orders as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as orders,
        sum(amount) as lifetime_value
    from {{ ref('fct_orders') }}
    where status != 'returned'
    group by customer_id
)

select
    c.customer_id,
    c.first_name,
    c.last_name,
    c.country,
    orders.first_order_date,
    orders.last_order_date,
    coalesce(orders.orders, 0) as orders,
    coalesce(orders.lifetime_value, 0) as lifetime_value
from {{ ref('stg_customers') }} as c
left join orders on orders.customer_id = c.customer_id
