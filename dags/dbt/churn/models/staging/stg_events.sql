with

source as (

    -- The mart's longest window is 30 days ending on ds.
    select * from {{ read_landing('events', window_days=30) }}
    where ds between cast('{{ var("ds") }}' as date) - 29
                 and cast('{{ var("ds") }}' as date)

),

typed as (

    -- Qualified names make a missing or renamed column fail as "source has no column X".
    select
        cast(source.event_id as varchar) as event_id,
        cast(source.customer_id as bigint) as customer_id,
        cast(source.event_ts as timestamp with time zone) as event_ts,
        -- The partition's day: the contract keeps event_ts inside it, and it needs no time zone.
        cast(source.ds as date) as ds,
        cast(source.event_type as varchar) as event_type,
        cast(source.amount as double precision) as amount

    from source

)

select * from typed
