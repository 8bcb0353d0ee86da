"""Entities: the keys features are served by."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A subscriber of the churn use case, keyed by customer_id.",
)
