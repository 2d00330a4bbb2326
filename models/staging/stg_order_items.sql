select
    order_id,
    product_id,
    quantity
from {{ source('shop_exports', 'order_items') }}
