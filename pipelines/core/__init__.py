"""Infrastructure with no domain words: settings and the data home, atomic files, MLflow, Great Expectations,
day windows, the Airflow runtime and the production profile. Domain packages build on it; it imports none of them.
"""

from pathlib import Path

# The repository (dags/, feature_repo/): relative paths in configs resolve against it. Kept here, not in
# settings, so that parsing a DAG file does not import pydantic-settings.
REPO_ROOT = Path(__file__).resolve().parents[2]
