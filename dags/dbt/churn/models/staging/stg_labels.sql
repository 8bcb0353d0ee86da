with

source as (

    select * from {{ read_landing('labels') }}
    where ds = cast('{{ var("ds") }}' as date)

),

typed as (

    -- Qualified names make a missing or renamed column fail as "source has no column X".
    select
        cast(source.customer_id as bigint) as customer_id,
        cast(source.label_ts as timestamp with time zone) as label_ts,
        cast(source.ds as date) as ds,
        cast(source.churned as bigint) as churned

    from source

)

select * from typed
