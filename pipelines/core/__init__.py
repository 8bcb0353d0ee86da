"""Infrastructure with no domain words: settings and the data home, atomic files, MLflow, Great Expectations,
day windows, the Airflow runtime and the production profile. Domain packages build on it; it imports none of them.
"""
