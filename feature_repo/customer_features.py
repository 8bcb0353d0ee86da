"""Feature views and services of the customer entity, named <entity>_<grain>_<thing>."""

from datetime import timedelta

from data_sources import customer_daily_features_source
from entities import customer
from feast import FeatureService, FeatureView, Field
from feast.types import Float64, Int64, String

customer_daily_activity = FeatureView(
    name="customer_daily_activity",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="sessions_7d", dtype=Int64),
        Field(name="sessions_30d", dtype=Int64),
        Field(name="purchases_30d", dtype=Int64),
        Field(name="spend_30d", dtype=Float64),
        Field(name="support_tickets_30d", dtype=Int64),
        Field(name="days_since_last_session", dtype=Int64),
    ],
    source=customer_daily_features_source,
    online=True,
    description="Rolling 7/30-day activity aggregates per customer, daily.",
)

customer_daily_profile = FeatureView(
    name="customer_daily_profile",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="tenure_days", dtype=Int64),
        Field(name="plan", dtype=String),
        Field(name="region", dtype=String),
        Field(name="monthly_charges", dtype=Float64),
    ],
    source=customer_daily_features_source,
    online=True,
    description="Contract and tenure of each customer, from the daily snapshot.",
)

# Versioned per model: a new model that reads other features gets churn_model_v2, and v1 keeps serving.
churn_model_v1 = FeatureService(
    name="churn_model_v1",
    features=[customer_daily_activity, customer_daily_profile],
    description="Everything the churn model v1 reads.",
)
