with

source as (

    select * from {{ read_landing('customers') }}
    where ds = cast('{{ var("ds") }}' as date)

),

typed as (

    -- Qualified names make a missing or renamed column fail as "source has no column X".
    select
        cast(source.customer_id as bigint) as customer_id,
        cast(source.ds as date) as ds,
        cast(source.signup_date as date) as signup_date,
        cast(source.plan as varchar) as plan,
        cast(source.region as varchar) as region,
        cast(source.monthly_charges as double precision) as monthly_charges

    from source

)

select * from typed
