-- Runs once, when the postgres service starts on an empty volume. `python -m pipelines.core.production init`
-- creates any of these that are missing too, so a volume from before a database was added still works.
CREATE DATABASE loopline_airflow;
CREATE DATABASE loopline_mlflow;
CREATE DATABASE loopline_feast;
CREATE DATABASE loopline_warehouse;
