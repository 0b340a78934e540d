"""curation: turn web crawls into curated pretraining corpora (never imports Airflow)."""
