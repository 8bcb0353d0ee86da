{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='ds',
    )
}}

with

customers as (

    select * from {{ ref('stg_customers') }}

),

events as (

    select * from {{ ref('stg_events') }}

),

as_of as (

    select cast('{{ var("ds") }}' as date) as ds

),

activity as (

    select
        events.customer_id,
        count(*) filter (
            where events.event_type = 'session' and events.ds > as_of.ds - 7
        ) as sessions_7d,
        count(*) filter (where events.event_type = 'session') as sessions_30d,
        count(*) filter (where events.event_type = 'purchase') as purchases_30d,
        sum(events.amount) filter (where events.event_type = 'purchase') as spend_30d,
        count(*) filter (where events.event_type = 'support_ticket') as support_tickets_30d,
        max(events.ds) filter (where events.event_type = 'session') as last_session_ds

    from events
    cross join as_of
    group by events.customer_id

),

features as (

    select
        customers.customer_id,
        customers.ds,
        -- Features describe the end of the day, so a label observed during ds never sees them.
        (cast(customers.ds as timestamp) + interval '23 hours 59 minutes 59 seconds')
            at time zone 'UTC' as feature_timestamp,
        cast(customers.ds - customers.signup_date as bigint) as tenure_days,
        customers.plan,
        customers.region,
        customers.monthly_charges,
        cast(coalesce(activity.sessions_7d, 0) as bigint) as sessions_7d,
        cast(coalesce(activity.sessions_30d, 0) as bigint) as sessions_30d,
        cast(coalesce(activity.purchases_30d, 0) as bigint) as purchases_30d,
        cast(coalesce(activity.spend_30d, 0) as double precision) as spend_30d,
        cast(coalesce(activity.support_tickets_30d, 0) as bigint) as support_tickets_30d,
        -- 31 = "no session in the 30-day window", one past the longest possible gap.
        cast(coalesce(customers.ds - activity.last_session_ds, 31) as bigint)
            as days_since_last_session

    from customers
    left join activity on customers.customer_id = activity.customer_id

)

select * from features
