{#-
  read_landing(table, window_days=1): the landing rows of `table` for the `window_days` days ending
  on var('ds'), with the partition day as a DATE column `ds`. window_days may not exceed
  var('loopline_lookback_days'), the staging window Loopline reads from dbt_project.yml. On DuckDB a table function over the
  landing files (read_landing_files); on Postgres the tables staged from them (read_landing_postgres).

  Why the files are listed here instead of passing the glob `ds=*/<table>.<ext>` straight to
  read_parquet: DuckDB binds the schema from the FIRST file the glob matches, before hive-partition
  pruning. One corrupt or renamed-column file on any past day would then break every later build,
  even days whose window does not include it. Listing only the window's files, the run's own day
  first, means a build reads (and binds to) exactly the days it aggregates.

  CSV is read all-varchar so every type comes from the casts in staging, not from a sniffer that
  might guess differently from one day to the next.
-#}
{% macro read_landing(table, window_days=1) -%}
  {#- On Postgres only var('loopline_lookback_days') days are staged: a longer window would silently miss days. -#}
  {%- set lookback = var('loopline_lookback_days', 30) | int -%}
  {%- if window_days > lookback -%}
    {{ exceptions.raise_compiler_error("read_landing('" ~ table ~ "', window_days=" ~ window_days ~ ") reads further back than var loopline_lookback_days (" ~ lookback ~ " days): raise loopline_lookback_days in dbt_project.yml, the window Loopline stages") }}
  {%- endif -%}
  {%- if target.type == 'postgres' -%}
    {{ read_landing_postgres(table, window_days) }}
  {%- else -%}
    {{ read_landing_files(table, window_days) }}
  {%- endif -%}
{%- endmacro %}


{#-
  On Postgres the files cannot be read in place: pipelines.features.warehouse.PostgresWarehouse.stage_landing
  loads the window's files into typed tables of schema var('landing_schema') before dbt runs.
-#}
{% macro read_landing_postgres(table, window_days=1) -%}
  {%- set ds = var('ds') -%}
  {%- set relation = adapter.quote(var('landing_schema')) ~ '.' ~ adapter.quote(table) -%}
  {%- if execute -%}
    {%- set own_rows = run_query("select count(*) from " ~ relation ~ " where ds = cast(" ~ loopline_literal(ds) ~ " as date)").columns[0].values()[0] -%}
    {%- if own_rows == 0 -%}
      {{ exceptions.raise_compiler_error("no " ~ table ~ " rows staged for ds=" ~ ds ~ " in " ~ relation ~ "; land the day (files, then " ~ (var('ready_marker', '_SUCCESS') or 'the ready marker') ~ ") before building it") }}
    {%- endif -%}
  {%- endif -%}
  (select * from {{ relation }}
   where ds between cast({{ loopline_literal(ds) }} as date) - {{ window_days - 1 }}
                and cast({{ loopline_literal(ds) }} as date)) as landed
{%- endmacro %}


{#-
  The partition folder and the file names come from the features YAML (vars `partition`, e.g. 'ds={ds}',
  and `table_files`, table -> file stem), never from this macro. The day is taken from the partition folder's
  name, so a layout that is not hive-style ('{ds}', 'day_{ds}') works as well as 'ds={ds}'.
-#}
{% macro landing_file_name(table) -%}
  {{- (var('table_files', {}) or {}).get(table, table) ~ '.' ~ var('file_format') -}}
{%- endmacro %}


{% macro landing_partition(ds) -%}
  {{- (var('partition', 'ds={ds}') | string).replace('{ds}', ds) -}}
{%- endmacro %}


{% macro read_landing_files(table, window_days=1) -%}
  {#- No trailing slash, so the listed paths compare equal to own_file below. -#}
  {%- set landing_path = (var('landing_path') | string).rstrip('/') -%}
  {%- set file_format = var('file_format') -%}
  {%- set ds = var('ds') -%}
  {%- set partition = var('partition', 'ds={ds}') | string -%}
  {%- set marker = var('ready_marker', '_SUCCESS') or 'the ready marker' -%}
  {%- if file_format not in ['parquet', 'csv'] -%}
    {{ exceptions.raise_compiler_error("var file_format must be 'parquet' or 'csv', got '" ~ file_format ~ "'") }}
  {%- endif -%}
  {%- if '{ds}' not in partition -%}
    {{ exceptions.raise_compiler_error("var partition must contain {ds}, got '" ~ partition ~ "'") }}
  {%- endif -%}
  {%- set file_name = landing_file_name(table) -%}
  {%- set pattern = landing_path ~ '/' ~ partition.replace('{ds}', '*') ~ '/' ~ file_name -%}
  {#- The day inside the partition folder's name: '/<partition with {ds} as a capture group>/<file>' at the end. -#}
  {%- set day_regex = '/' ~ modules.re.escape(partition).replace(modules.re.escape('{ds}'), '(\\d{4}-\\d{2}-\\d{2})') ~ '/[^/]*$' -%}
  {%- if execute -%}
    {%- if not landing_path or not ds -%}
      {{ exceptions.raise_compiler_error("read_landing needs vars landing_path and ds (YYYY-MM-DD); got landing_path='" ~ landing_path ~ "', ds='" ~ ds ~ "'") }}
    {%- endif -%}
    {%- set listing -%}
      with landed as (
          select
              file,
              try_cast(regexp_extract(file, {{ loopline_literal(day_regex) }}, 1) as date) as file_ds
          from glob({{ loopline_literal(pattern) }})
      )
      select file
      from landed
      where file_ds between cast({{ loopline_literal(ds) }} as date) - {{ window_days - 1 }}
                        and cast({{ loopline_literal(ds) }} as date)
      order by file_ds = cast({{ loopline_literal(ds) }} as date) desc, file_ds
    {%- endset -%}
    {%- set files = run_query(listing).columns[0].values() | list -%}
    {%- set own_file = landing_path ~ '/' ~ landing_partition(ds) ~ '/' ~ file_name -%}
    {%- if files | length == 0 or files[0] != own_file -%}
      {{ exceptions.raise_compiler_error("no " ~ file_name ~ " landed for ds=" ~ ds ~ ": expected " ~ own_file ~ "; land the day (files, then " ~ marker ~ ") before building it") }}
    {%- endif -%}
  {%- else -%}
    {#- Parsing only: the SQL is never run, and run_query is not available. -#}
    {%- set files = [pattern] -%}
  {%- endif -%}
  {%- set file_list -%}
    [{% for f in files %}{{ loopline_literal(f) }}{{ ", " if not loop.last }}{% endfor %}]
  {%- endset -%}
  {%- if file_format == 'parquet' -%}
    {%- set reader = "read_parquet(" ~ file_list ~ ", filename = true, hive_partitioning = false)" -%}
  {%- else -%}
    {%- set reader = "read_csv(" ~ file_list ~ ", header = true, all_varchar = true, filename = true, hive_partitioning = false)" -%}
  {%- endif -%}
  (select * exclude (filename),
          cast(regexp_extract(filename, {{ loopline_literal(day_regex) }}, 1) as date) as ds
   from {{ reader }}) as landed
{%- endmacro %}


{#- A SQL string literal, quotes doubled. -#}
{% macro loopline_literal(value) -%}
  '{{ value | string | replace("'", "''") }}'
{%- endmacro %}
