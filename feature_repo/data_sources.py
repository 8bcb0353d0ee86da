"""Offline sources: the validated copies of the dbt marts that the feature pipelines publish."""

from feast import FileSource

from pipelines.settings import get_settings

# One parquet file per validated day; Feast reads the folder. Only days that passed Great Expectations
# are ever written here (see pipelines/features.py:publish_offline_day).
customer_daily_features_source = FileSource(
    name="customer_daily_features_source",
    path=str(get_settings().path("offline", "churn", "customer_daily_features")),
    timestamp_field="feature_timestamp",
    description="One row per customer per day, as of 23:59:59 UTC of that day.",
)
