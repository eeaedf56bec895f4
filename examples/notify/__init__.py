"""The reference notification service: ``uvicorn examples.notify.app:app``."""
