"""DAG templates: one function per template, turning a validated config into a DAG."""
