"""Test-only: keep every Airflow server on loopback.

Airflow 3.3's log servers (`serve-logs` in the scheduler and triggerer) call uvicorn with
host="" (all interfaces) and have no setting to change it. Tests put this folder on PYTHONPATH
of the Airflow processes they start, so those servers bind 127.0.0.1 instead.
"""

try:
    import uvicorn
except ImportError:  # not an Airflow process
    uvicorn = None

if uvicorn is not None:
    _run = uvicorn.run

    def _run_on_loopback(*args, **kwargs):
        if kwargs.get("host") in ("", "0.0.0.0", "::", None):
            kwargs["host"] = "127.0.0.1"
        return _run(*args, **kwargs)

    uvicorn.run = _run_on_loopback
