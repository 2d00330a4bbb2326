-- Ephemeral: inlined as a CTE into the models that use it.
select
    order_id,
    {{ pivot_sum('payment_method', var('payment_methods'), 'amount') }},
    sum(amount) as total_paid
from {{ ref('stg_payments') }}
group by order_id
