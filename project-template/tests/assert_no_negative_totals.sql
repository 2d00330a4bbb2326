-- Singular test: returns the customers whose lifetime value is negative (should be none).
select customer_id, lifetime_value
from {{ ref('customers') }}
where lifetime_value < 0
