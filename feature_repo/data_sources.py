"""Offline sources: the validated copies of the dbt marts that the feature pipelines publish."""

from feast import FileSource

# A relative path: Feast resolves it against <data home>/offline/<project> (pipelines/features/feast_store.py), so
# every instance of the template reads its own published days. Only days that passed Great Expectations
# are ever written there, one parquet file per day.
customer_daily_features_source = FileSource(
    name="customer_daily_features_source",
    path="customer_daily_features",
    timestamp_field="feature_timestamp",
    description="One row per customer per day, as of 23:59:59 UTC of that day.",
)
