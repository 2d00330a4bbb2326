-- Singular test: completed orders are paid in full (to the cent).
select order_id, items_value, amount
from {{ ref('fct_orders') }}
where status = 'completed'
  and abs(items_value - amount) > 0.01
