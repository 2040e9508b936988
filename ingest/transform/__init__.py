"""The transform room: dbt run in-process (one build, or a service), its results and metrics, the summary."""
